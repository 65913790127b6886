//! The SQLite credential store in Rust: the responder's lookup and the ratchet's
//! group-committed compare-and-set (the Rust twin of `store/repository.py`'s SQLite paths).
//!
//! * One [`Reader`] per responder thread (its own connection: a lookup is an indexed read
//!   on a local WAL file, answered inline), one [`Writer`] on the group-commit thread
//!   (`BEGIN IMMEDIATE`, every compare-and-set of the batch, `COMMIT`: one fsync at
//!   `synchronous=FULL` for the whole batch; `wal_autocheckpoint=0`, checkpoints run on a
//!   maintenance connection, as `store.committer._Checkpointer` does).  Two connections and
//!   not one: a commit fsyncs while holding its connection, and the reader must not wait
//!   for that; WAL lets the reader go on meanwhile (it re-reads the pages a commit changed).
//! * The statements are the Python store's, character for character ([`LOOKUP_SQL`],
//!   [`RATCHET_SQL`] plus [`Policy::guard`]); the bound values are the same values.
//! * rusqlite is linked against the system libsqlite3 -- the library Python's `sqlite3`
//!   module loaded into this same process.  Two copies of SQLite in one process would each
//!   keep their own table of POSIX locks, and closing a file in one copy drops the other's
//!   locks (sqlite.org/howtocorrupt.html, 2.2.1); one shared copy has one table.
//! * A row is untrusted input: every column is type-checked as Python's store does
//!   (SQLite keeps any type in any column), and a row that does not decode or authenticate
//!   is [`StoreError::Corrupt`] -- the resumption is refused, nothing is deleted.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use zeroize::Zeroizing;

use super::keys::{install_binding, record_aad, record_binding, Keyring, UnwrapError, NONCE_LEN};
use super::params::ParamsMemo;
use super::policy::{Counters, GuardArg, Limit, Policy};
use super::{Lookup, StoreError};
use crate::credential::{Credential, Lifetimes, Lineage, ProtocolMode};
use crate::events::SaPair;

/// `store/repository.py`'s `_SQL_LOOKUP_R`: the responder's per-message read.
pub const LOOKUP_SQL: &str = "SELECT uid, mode, generation, key_id, secret_wrapped, \
paper_wrapped, id_i, id_r, params, full_ike_at, last_used_at, established_s, bytes_total, \
resumptions, lineage FROM credentials WHERE role = 'responder' AND handle = ?";

/// `store/repository.py`'s `_SQL_RATCHET` (the policy guard's terms are appended).
pub const RATCHET_SQL: &str = "UPDATE credentials SET handle = ?, generation = ?, \
secret_wrapped = ?, paper_wrapped = ?, key_id = ?, lineage = ?, resumptions = resumptions + 1, \
last_used_at = CASE WHEN last_used_at < ? THEN ? ELSE last_used_at END \
WHERE role = 'responder' AND handle = ? AND generation = ? \
AND mode = ? AND id_i = ? AND id_r = ? AND params = ?";

/// `store/outbox.py`'s `INSERT_SQL`: an accepted exchange's SA pair, in the transaction of
/// its compare-and-set (spec 6.2.1; the columns: `store/tables.py`).
pub const OUTBOX_INSERT_SQL: &str = "INSERT INTO install_outbox (uid, node, handle, \
generation, committed_at, expires_at, sa, key_id, keys_wrapped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// `store/repository.py`'s `_SQL_OUTBOX_DELETE`: a row whose install attempt finished.
pub const OUTBOX_DELETE_SQL: &str = "DELETE FROM install_outbox WHERE uid = ?";

/// `PRAGMA mmap_size` of every connection (an address-space reservation, not memory).
const MMAP_BYTES: i64 = 1 << 30;
/// `PRAGMA cache_size` (negative: KiB) of every connection.
const CACHE_KIB: i64 = -65536;

/// The handle no credential has: a probe reads it to learn whether lookups work.
pub const PROBE_HANDLE: [u8; 16] = [0; 16];

/// How to open the database file Python created and migrated.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: String,
    /// "FULL" (default: an acknowledged commit survives power loss), "NORMAL" or "EXTRA".
    pub synchronous: String,
    pub busy_timeout: Duration,
}

fn unavailable(op: &str, e: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("{op}: database unreachable or failing: {e}"))
}

/// A connection with the store's settings (`store.engine.sqlite_connect`).  Never creates
/// the file: the schema is Python's to create.
pub fn connect(opts: &SqliteOptions, writer: bool) -> Result<Connection, StoreError> {
    let op = "open";
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&opts.path, flags).map_err(|e| unavailable(op, &e))?;
    conn.busy_timeout(opts.busy_timeout)
        .map_err(|e| unavailable(op, &e))?;
    let sync = match opts.synchronous.to_ascii_uppercase().as_str() {
        s @ ("FULL" | "NORMAL" | "EXTRA") => s.to_owned(),
        other => {
            return Err(StoreError::Unavailable(format!(
                "bad synchronous {other:?}"
            )))
        }
    };
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| unavailable(op, &e))?;
    conn.pragma_update(None, "synchronous", &sync)
        .map_err(|e| unavailable(op, &e))?;
    if writer {
        // checkpoints run on the maintenance connection, never inside a commit
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| unavailable(op, &e))?;
    }
    // Pages of the database file are read through a mapping (no read(2) and no copy per
    // page) and kept in a page cache big enough for the credentials table of a large
    // deployment; neither changes the file or its durability.
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)
        .map_err(|e| unavailable(op, &e))?;
    conn.pragma_update(None, "cache_size", CACHE_KIB)
        .map_err(|e| unavailable(op, &e))?;
    Ok(conn)
}

// --- reading a row ------------------------------------------------------------------------

fn corrupt(uid: &str, what: impl core::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("record {uid}: {what}"))
}

/// `float(x)` of a counter column (INTEGER or REAL), finite.
fn real(v: ValueRef<'_>, uid: &str, col: &str) -> Result<f64, StoreError> {
    let f = match v {
        ValueRef::Integer(i) => i as f64,
        ValueRef::Real(f) => f,
        _ => return Err(corrupt(uid, format!("bad counters: {col} is not a number"))),
    };
    if f.is_finite() {
        Ok(f)
    } else {
        Err(corrupt(uid, "bad counters: not finite"))
    }
}

/// `int(x)` of a counter column: an integer, or a finite real truncated toward zero.
fn integer(v: ValueRef<'_>, uid: &str, col: &str) -> Result<i64, StoreError> {
    match v {
        ValueRef::Integer(i) => Ok(i),
        ValueRef::Real(f) if f.is_finite() && f.abs() < 9.2e18 => Ok(f.trunc() as i64),
        _ => Err(corrupt(
            uid,
            format!("bad counters: {col} is not an integer"),
        )),
    }
}

fn blob<'a>(v: ValueRef<'a>, uid: &str, col: &str) -> Result<&'a [u8], StoreError> {
    match v {
        ValueRef::Blob(b) => Ok(b),
        _ => Err(corrupt(uid, format!("{col} is not binary"))),
    }
}

fn text<'a>(v: ValueRef<'a>, uid: &str, col: &str) -> Result<&'a str, StoreError> {
    match v {
        ValueRef::Text(t) => {
            std::str::from_utf8(t).map_err(|_| corrupt(uid, format!("{col}: not UTF-8")))
        }
        _ => Err(corrupt(uid, format!("{col} is not text"))),
    }
}

fn uid_of(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Text(t) => String::from_utf8_lossy(t).chars().take(64).collect(),
        ValueRef::Integer(i) => i.to_string(),
        _ => "?".to_owned(),
    }
}

fn unwrap_err(uid: &str, e: UnwrapError) -> StoreError {
    match e {
        UnwrapError::UnknownKey(k) => StoreError::Key(format!(
            "record {uid}: wrapped under master key id {k:?}, which is not configured"
        )),
        UnwrapError::Corrupt(why) => corrupt(uid, format!("secret {why}")),
    }
}

/// A paper-keys blob decodes (`store.codec.paper_keys_from_bytes`), whatever the row's mode.
fn paper_keys_ok(raw: &[u8]) -> bool {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(raw) else {
        return false;
    };
    ["i_to_r", "r_to_i"].iter().all(|d| {
        doc.get(d).is_some_and(|k| {
            k.get("spi").is_some()
                && ["encr_key", "integ_key"].iter().all(|f| {
                    k.get(f).and_then(|v| v.as_str()).is_some_and(|h| {
                        h.len() % 2 == 0 && h.bytes().all(|c| c.is_ascii_hexdigit())
                    })
                })
        })
    })
}

/// The responder's reads, on this thread's connection.
///
/// A lookup outside a batch is its own read transaction.  Between [`Reader::batch_start`]
/// and [`Reader::batch_end`] the lookups of one received batch share one read transaction
/// (one snapshot, held for the batch only, i.e. well under a millisecond): each transaction
/// costs file-lock system calls (SHARED on the database, a read mark in the WAL index) that
/// were a third of a lookup's time when every lookup paid them.
pub struct Reader {
    opts: SqliteOptions,
    conn: Option<Connection>,
    keyring: Arc<Keyring>,
    policy: Policy,
    memo: ParamsMemo,
    batching: bool,
    in_tx: bool,
}

impl Reader {
    pub fn new(opts: SqliteOptions, keyring: Arc<Keyring>, policy: Policy) -> Self {
        Reader {
            opts,
            conn: None,
            keyring,
            policy,
            memo: ParamsMemo::new(4096),
            batching: false,
            in_tx: false,
        }
    }

    /// Lookups until [`Reader::batch_end`] share one read transaction (opened at the
    /// first of them).
    pub fn batch_start(&mut self) {
        self.batching = true;
    }

    /// End the batch's read transaction, if one was opened.
    pub fn batch_end(&mut self) {
        self.batching = false;
        if self.in_tx {
            self.in_tx = false;
            let ok = self
                .conn
                .as_ref()
                .is_some_and(|c| c.execute_batch("COMMIT").is_ok());
            if !ok {
                self.conn = None; // a connection in an unknown state is never reused
            }
        }
    }

    /// Open the connection now (and prepare the lookup: a missing table or column fails
    /// here, at start-up, rather than at the first resumption).
    pub fn open(&mut self) -> Result<(), StoreError> {
        let conn = connect(&self.opts, false)?;
        conn.prepare_cached(LOOKUP_SQL)
            .map_err(|e| unavailable("prepare lookup", &e))?;
        self.conn = Some(conn);
        Ok(())
    }

    /// The params memo (the text a credential's parameters came from, for its commit).
    pub fn memo(&self) -> &ParamsMemo {
        &self.memo
    }

    /// `Store.lookup(handle, now)` for the responder role.
    pub fn lookup(&mut self, handle: &[u8], now: f64) -> Result<Lookup, StoreError> {
        if self.conn.is_none() {
            self.open()?;
        }
        if self.batching && !self.in_tx {
            let begun = self
                .conn
                .as_ref()
                .map(|c| c.prepare_cached("BEGIN").and_then(|mut s| s.execute([])));
            match begun {
                Some(Ok(_)) => self.in_tx = true,
                Some(Err(e)) => {
                    self.conn = None;
                    return Err(unavailable("lookup", &e));
                }
                None => {}
            }
        }
        let res = self.lookup_on_conn(handle, now);
        if matches!(res, Err(StoreError::Unavailable(_))) {
            self.conn = None; // never reuse a connection in an unknown state
            self.in_tx = false;
        }
        res
    }

    fn lookup_on_conn(&mut self, handle: &[u8], now: f64) -> Result<Lookup, StoreError> {
        let Some(conn) = self.conn.as_ref() else {
            return Err(StoreError::Unavailable("lookup: no connection".into()));
        };
        let mut stmt = conn
            .prepare_cached(LOOKUP_SQL)
            .map_err(|e| unavailable("lookup", &e))?;
        // a unique key: the statement steps to its end (or is dropped), which resets it and
        // ends the read transaction -- no snapshot is held between lookups
        let mut rows = stmt
            .query([handle])
            .map_err(|e| unavailable("lookup", &e))?;
        let Some(row) = rows.next().map_err(|e| unavailable("lookup", &e))? else {
            return Ok(Lookup::Miss);
        };
        let g = |i: usize| row.get_ref(i).map_err(|e| unavailable("lookup", &e));
        let uid = uid_of(g(0)?);
        let counters = Counters {
            full_ike_at: real(g(9)?, &uid, "full_ike_at")?,
            last_used_at: real(g(10)?, &uid, "last_used_at")?,
            established_s: real(g(11)?, &uid, "established_s")?,
            bytes_total: integer(g(12)?, &uid, "bytes_total")?,
            resumptions: integer(g(13)?, &uid, "resumptions")?,
        };
        if let Some(refusal) = self.policy.check(&counters, now) {
            return Ok(Lookup::Refused(refusal));
        }
        let mode_s = text(g(1)?, &uid, "mode")?;
        let mode = match mode_s {
            "hardened" => ProtocolMode::Hardened,
            "paper" => ProtocolMode::Paper,
            m => return Err(corrupt(&uid, format!("undecodable mode {m:?}"))),
        };
        let generation = match g(2)? {
            ValueRef::Integer(i) => u32::try_from(i)
                .map_err(|_| corrupt(&uid, format!("generation {i} out of range")))?,
            _ => return Err(corrupt(&uid, "generation is not an integer")),
        };
        let key_id = match g(3)? {
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            _ => {
                return Err(StoreError::Key(format!(
                    "record {uid}: key id is not text (wrong master key?)"
                )))
            }
        };
        let wrapped = blob(g(4)?, &uid, "secret_wrapped")?;
        let paper_wrapped = match g(5)? {
            ValueRef::Null => None,
            v => Some(blob(v, &uid, "paper_wrapped")?),
        };
        let id_i = blob(g(6)?, &uid, "id_i")?;
        let id_r = blob(g(7)?, &uid, "id_r")?;
        let ptext = text(g(8)?, &uid, "params")?;
        let params = self
            .memo
            .parse(ptext)
            .map_err(|e| corrupt(&uid, format!("undecodable mode/SA parameters: {e}")))?;
        let binding = record_binding(id_i, id_r, ptext);
        // one AAD per wrapped column (purpose "secret" / "paper"), bound to this row
        let unwrap = |purpose: &str, blob: &[u8]| {
            let aad = record_aad(
                purpose,
                "responder",
                mode_s,
                handle,
                u64::from(generation),
                &binding,
            )
            .ok_or_else(|| corrupt(&uid, "handle too long"))?;
            self.keyring
                .unwrap(&key_id, blob, &aad)
                .map_err(|e| unwrap_err(&uid, e))
        };
        let secret = unwrap("secret", wrapped)?;
        if let Some(pw) = paper_wrapped {
            let raw = unwrap("paper", pw)?;
            if !paper_keys_ok(&raw) {
                return Err(corrupt(&uid, "undecodable paper keys"));
            }
        } else if mode == ProtocolMode::Paper {
            return Err(corrupt(
                &uid,
                "a paper-mode credential carries the previous ESP keys",
            ));
        }
        // not under the AAD (like the counters); a value that is not a lineage is corrupt,
        // never read as post-quantum (store/wrapping.py)
        let lineage_s = text(g(14)?, &uid, "lineage")?;
        let lineage = Lineage::from_name(lineage_s)
            .ok_or_else(|| corrupt(&uid, format!("undecodable lineage {lineage_s:?}")))?;
        let cred = Credential::new(
            mode,
            handle.to_vec(),
            generation,
            secret.to_vec(),
            id_i.to_vec(),
            id_r.to_vec(),
            params,
        )
        .map_err(|e| corrupt(&uid, e.0))?
        .with_lineage(lineage);
        let lifetimes = self.policy.sa_lifetimes(&counters, now);
        Ok(Lookup::Found(Box::new((cred, lifetimes))))
    }
}

// --- the ratchet ------------------------------------------------------------------------

/// One compare-and-set: accept `successor` in place of (`handle`, `generation`).
#[derive(Clone)]
pub struct Accept {
    pub handle: Vec<u8>,
    pub generation: u32,
    pub successor: Credential,
    /// The consumed row's parameter text (the compare-and-set compares it, the AAD binds it).
    pub params_text: Arc<str>,
    pub now: f64,
    /// The SA pair to insert into the install outbox if the compare-and-set wins (None:
    /// the service installs nothing).
    pub install: Option<Box<InstallRow>>,
}

/// An install-outbox row to write with an accept (`store.outbox.InstallIntent`).
#[derive(Clone)]
pub struct InstallRow {
    /// 32 lowercase hex digits, chosen by the writer ([`InstallRow::new_uid`]).
    pub uid: String,
    /// The responder whose kernel installs it (`[install] node`).
    pub node: Arc<str>,
    pub sa: SaPair,
}

impl InstallRow {
    /// A fresh uid: 16 random bytes as hex (`os.urandom(16).hex()`).
    pub fn new_uid() -> Result<String, StoreError> {
        let mut b = [0u8; 16];
        rand::fill(&mut b).map_err(|_| StoreError::Unavailable("system random failed".into()))?;
        Ok(b.iter().map(|x| format!("{x:02x}")).collect())
    }
}

fn json_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_owned(), |x| x.to_string())
}

/// `Lifetimes.to_json()` as canonical JSON (sorted keys, no spaces).
fn lifetimes_text(lt: &Lifetimes) -> String {
    format!(
        "{{\"hard_bytes\":{},\"hard_packets\":{},\"hard_seconds\":{},\"soft_bytes\":{},\
         \"soft_packets\":{},\"soft_seconds\":{}}}",
        json_opt(lt.hard_bytes),
        json_opt(lt.hard_packets),
        json_opt(lt.hard_seconds),
        json_opt(lt.soft_bytes),
        json_opt(lt.soft_packets),
        json_opt(lt.soft_seconds),
    )
}

/// `store.outbox.sa_text`: the SA pair without its keys, canonical JSON, with the
/// parameters as `params_text` (the stored text of the credential's parameters).
pub fn sa_text(sa: &SaPair, params_text: &str) -> String {
    let role = if sa.initiator_side {
        "initiator"
    } else {
        "responder"
    };
    format!(
        "{{\"i_to_r_spi\":{},\"lifetimes\":{},\"params\":{},\"r_to_i_spi\":{},\
         \"reqid\":null,\"role\":\"{}\"}}",
        sa.i_to_r.spi,
        lifetimes_text(&sa.lifetimes),
        params_text,
        sa.r_to_i.spi,
        role,
    )
}

/// `store.outbox.keys_blob`: `lp(i2r encr) | lp(i2r integ) | lp(r2i encr) | lp(r2i integ)`.
pub fn keys_blob(sa: &SaPair) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(136));
    for k in [
        &sa.i_to_r.encr_key,
        &sa.i_to_r.integ_key,
        &sa.r_to_i.encr_key,
        &sa.r_to_i.integ_key,
    ] {
        let n = u16::try_from(k.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(k.get(..usize::from(n)).unwrap_or(&k[..]));
    }
    out
}

/// The outbox row of an accept that won: (expires_at, sa text, key id, wrapped keys),
/// wrapped as `store.wrapping.wrap_install` does.
fn outbox_row(
    keyring: &Keyring,
    r: &Accept,
    row: &InstallRow,
) -> Result<(Option<f64>, String, String, Vec<u8>), StoreError> {
    let text = sa_text(&row.sa, &r.params_text);
    let exp = row.sa.lifetimes.hard_seconds.map(|h| r.now + h as f64);
    let binding = install_binding(&text, exp);
    let aad = record_aad(
        "install",
        "responder",
        "esp",
        &r.handle,
        u64::from(r.generation),
        &binding,
    )
    .ok_or_else(|| StoreError::Corrupt("handle too long".into()))?;
    let (kid, wrapped) = keyring
        .wrap(&keys_blob(&row.sa), &aad)
        .map_err(StoreError::Unavailable)?;
    Ok((exp, text, kid.to_owned(), wrapped))
}

fn bind_limit(stmt: &mut rusqlite::Statement<'_>, i: usize, l: Limit) -> rusqlite::Result<()> {
    match l {
        Limit::Int(v) => stmt.raw_bind_parameter(i, v),
        Limit::Float(v) => stmt.raw_bind_parameter(i, v),
    }
}

/// The group-commit thread's connection.
pub struct Writer {
    opts: SqliteOptions,
    conn: Option<Connection>,
    keyring: Arc<Keyring>,
    sql: String,
    guard: Vec<GuardArg>,
    /// install-outbox rows this writer deleted (committed)
    pub forgotten: u64,
}

impl Writer {
    pub fn new(opts: SqliteOptions, keyring: Arc<Keyring>, policy: &Policy) -> Self {
        let (terms, guard) = policy.guard();
        Writer {
            opts,
            conn: None,
            keyring,
            sql: format!("{RATCHET_SQL}{terms}"),
            guard,
            forgotten: 0,
        }
    }

    /// The guarded UPDATE this writer runs (the contract test compares it with Python's).
    pub fn ratchet_sql(&self) -> &str {
        &self.sql
    }

    pub fn open(&mut self) -> Result<(), StoreError> {
        let conn = connect(&self.opts, true)?;
        conn.prepare_cached(&self.sql)
            .map_err(|e| unavailable("prepare ratchet", &e))?;
        self.conn = Some(conn);
        Ok(())
    }

    /// `Store.commit_ratchet_many`: every accept in ONE transaction, in order (each sees
    /// the rows of those before it), answered only once `COMMIT` returned -- after the WAL
    /// fsync at `synchronous=FULL`.  Err: nothing was committed (every accept refused).
    ///
    /// Every winning accept with an [`InstallRow`] inserts its install-outbox row in the
    /// same transaction; `forget` names outbox rows (installed meanwhile) to delete in it
    /// too -- with no accept, they get a transaction of their own.
    pub fn commit(&mut self, reqs: &[Accept], forget: &[String]) -> Result<Vec<bool>, StoreError> {
        self.commit_iter(reqs.iter(), forget)
    }

    /// [`Writer::commit`] over borrowed accepts (the committer's queue keeps them).
    pub fn commit_iter<'a>(
        &mut self,
        reqs: impl ExactSizeIterator<Item = &'a Accept> + Clone,
        forget: &[String],
    ) -> Result<Vec<bool>, StoreError> {
        if reqs.len() == 0 && forget.is_empty() {
            return Ok(Vec::new());
        }
        if self.conn.is_none() {
            self.open()?;
        }
        let res = self.commit_on_conn(reqs, forget);
        if res.is_err() {
            self.conn = None;
        }
        res
    }

    fn commit_on_conn<'a>(
        &mut self,
        reqs: impl ExactSizeIterator<Item = &'a Accept> + Clone,
        forget: &[String],
    ) -> Result<Vec<bool>, StoreError> {
        let op = "commit_ratchet";
        // one getrandom for the whole batch's nonces
        let mut nonces = Zeroizing::new(vec![0u8; NONCE_LEN * reqs.len()]);
        rand::fill(&mut nonces[..])
            .map_err(|_| StoreError::Unavailable(format!("{op}: system random failed")))?;
        let mut rows = Vec::with_capacity(reqs.len());
        for (k, r) in reqs.clone().enumerate() {
            let s = &r.successor;
            let binding = record_binding(s.id_i(), s.id_r(), &r.params_text);
            let aad = record_aad(
                "secret",
                "responder",
                "hardened",
                s.handle(),
                u64::from(s.generation()),
                &binding,
            )
            .ok_or_else(|| StoreError::Corrupt("successor handle too long".into()))?;
            let mut nonce = [0u8; NONCE_LEN];
            if let Some(src) = nonces.get(k * NONCE_LEN..(k + 1) * NONCE_LEN) {
                nonce.copy_from_slice(src);
            }
            let (kid, wrapped) = self
                .keyring
                .wrap_with_nonce(s.secret(), &aad, nonce)
                .map_err(StoreError::Unavailable)?;
            rows.push((kid.to_owned(), wrapped));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Unavailable(format!("{op}: no connection")));
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| unavailable(op, &e))?;
        let mut out = Vec::with_capacity(reqs.len());
        {
            let mut stmt = tx
                .prepare_cached(&self.sql)
                .map_err(|e| unavailable(op, &e))?;
            for (r, (kid, wrapped)) in reqs.clone().zip(&rows) {
                let s = &r.successor;
                if r.generation.checked_add(1) != Some(s.generation()) {
                    out.push(false); // not a successor of the row it would replace
                    continue;
                }
                let bound = (|| -> rusqlite::Result<()> {
                    stmt.raw_bind_parameter(1, s.handle())?;
                    stmt.raw_bind_parameter(2, i64::from(s.generation()))?;
                    stmt.raw_bind_parameter(3, &wrapped[..])?;
                    stmt.raw_bind_parameter(4, rusqlite::types::Null)?;
                    stmt.raw_bind_parameter(5, kid.as_str())?;
                    stmt.raw_bind_parameter(6, s.lineage().name())?;
                    stmt.raw_bind_parameter(7, r.now)?;
                    stmt.raw_bind_parameter(8, r.now)?;
                    stmt.raw_bind_parameter(9, &r.handle[..])?;
                    stmt.raw_bind_parameter(10, i64::from(r.generation))?;
                    stmt.raw_bind_parameter(11, "hardened")?;
                    stmt.raw_bind_parameter(12, s.id_i())?;
                    stmt.raw_bind_parameter(13, s.id_r())?;
                    stmt.raw_bind_parameter(14, &*r.params_text)?;
                    for (i, a) in (15..).zip(self.guard.iter()) {
                        match a {
                            GuardArg::Now => stmt.raw_bind_parameter(i, r.now)?,
                            GuardArg::Limit(l) => bind_limit(&mut stmt, i, *l)?,
                        }
                    }
                    Ok(())
                })();
                bound.map_err(|e| unavailable(op, &e))?;
                match stmt.raw_execute() {
                    Ok(n) => out.push(n == 1),
                    // the successor's handle collides with another row: this one loses
                    Err(rusqlite::Error::SqliteFailure(f, _))
                        if f.code == ErrorCode::ConstraintViolation =>
                    {
                        out.push(false)
                    }
                    Err(e) => return Err(unavailable(op, &e)),
                }
            }
        }
        let won = reqs.zip(&out).filter(|(r, ok)| **ok && r.install.is_some());
        let mut won = won.peekable();
        if won.peek().is_some() {
            let mut ins = tx
                .prepare_cached(OUTBOX_INSERT_SQL)
                .map_err(|e| unavailable(op, &e))?;
            for (r, _) in won {
                let Some(row) = r.install.as_deref() else {
                    continue;
                };
                let (exp, text, kid, wrapped) = outbox_row(&self.keyring, r, row)?;
                ins.execute(rusqlite::params![
                    row.uid,
                    &*row.node,
                    &r.handle[..],
                    i64::from(r.generation),
                    r.now,
                    exp,
                    text,
                    kid,
                    wrapped,
                ])
                .map_err(|e| unavailable(op, &e))?;
            }
        }
        let mut deleted = 0u64;
        if !forget.is_empty() {
            let mut del = tx
                .prepare_cached(OUTBOX_DELETE_SQL)
                .map_err(|e| unavailable(op, &e))?;
            for uid in forget {
                deleted += del.execute([uid]).map_err(|e| unavailable(op, &e))? as u64;
            }
        }
        tx.commit().map_err(|e| unavailable(op, &e))?;
        self.forgotten += deleted;
        Ok(out)
    }
}

/// A maintenance connection: WAL checkpoints and the health probe.
pub struct Maintenance {
    opts: SqliteOptions,
    conn: Option<Connection>,
}

impl Maintenance {
    pub fn new(opts: SqliteOptions) -> Self {
        Maintenance { opts, conn: None }
    }

    fn conn(&mut self) -> Result<&Connection, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.opts, false)?);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }

    /// PASSIVE then RESTART, as `store.committer._Checkpointer` does (a busy database is
    /// not an error: the next round retries).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        let conn = self.conn()?;
        for mode in ["PASSIVE", "RESTART"] {
            let r: rusqlite::Result<i64> =
                conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                    row.get(0)
                });
            if let Err(e) = r {
                self.conn = None;
                return Err(unavailable("wal checkpoint", &e));
            }
        }
        Ok(())
    }

    /// The lookup statement for a handle no credential has: fails exactly when lookups
    /// would (unreachable file, missing table or column).
    pub fn probe(&mut self) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let r = conn.prepare_cached(LOOKUP_SQL).and_then(|mut s| {
            s.query([&PROBE_HANDLE[..]])
                .and_then(|mut rows| rows.next().map(|_| ()))
        });
        if let Err(e) = r {
            self.conn = None;
            return Err(unavailable("probe", &e));
        }
        Ok(())
    }
}
