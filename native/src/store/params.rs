//! A row's SA parameters: the stored JSON text <-> [`SaParams`] (`store/codec.py`,
//! `SAParams.from_json` / `to_json`; the format is `specs/cache-format.md` section 4).
//!
//! Reading is strict where Python is lenient on rows it never writes (a number where a
//! string belongs, `"20"` for 20): such a row is refused as corrupt -- it fails closed, the
//! peer falls back to a full IKE.  Every row the Python store writes (canonical text)
//! reads as the same parameters.  The text itself is kept with the parsed value: the
//! ratchet's compare-and-set and the AAD binding use the row's own text, as Python does.
//!
//! [`canonical_json`] is `json.dumps(p.to_json(), sort_keys=True, separators=(",", ":"))`
//! (ASCII only, `\uXXXX` escapes), the text an install-outbox row embeds.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::credential::{SaParams, TrafficSelector};

fn field<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a Value, String> {
    o.get(k).ok_or_else(|| format!("missing {k:?}"))
}

fn int<T: TryFrom<i64>>(v: &Value, what: &str) -> Result<T, String> {
    v.as_i64()
        .and_then(|i| T::try_from(i).ok())
        .ok_or_else(|| format!("{what}: not an integer in range"))
}

fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    v.as_str().ok_or_else(|| format!("{what}: not a string"))
}

fn opt_int<T: TryFrom<i64>>(o: &Map<String, Value>, k: &str, default: T) -> Result<T, String> {
    match o.get(k) {
        None => Ok(default),
        Some(v) => int(v, k),
    }
}

fn opt_port(o: &Map<String, Value>, k: &str) -> Result<Option<u16>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => int(v, k).map(Some),
    }
}

fn selector(v: &Value) -> Result<TrafficSelector, String> {
    let o = v.as_object().ok_or("traffic selector: not an object")?;
    TrafficSelector::new(
        text(field(o, "start_addr")?, "start_addr")?,
        text(field(o, "end_addr")?, "end_addr")?,
        opt_int(o, "protocol", 0u8)?,
        opt_int(o, "start_port", 0u16)?,
        opt_int(o, "end_port", 65535u16)?,
    )
    .map_err(|e| e.0)
}

fn selectors(v: &Value, what: &str) -> Result<Vec<TrafficSelector>, String> {
    v.as_array()
        .ok_or_else(|| format!("{what}: not a list"))?
        .iter()
        .map(selector)
        .collect()
}

/// Parse stored parameter text; Err(reason) for anything this store will not use.
pub fn parse_params(text_: &str) -> Result<SaParams, String> {
    let doc: Value = serde_json::from_str(text_).map_err(|e| format!("not JSON: {e}"))?;
    let o = doc.as_object().ok_or("not a JSON object")?;
    let mode = match text(field(o, "mode")?, "mode")? {
        "transport" => 1,
        "tunnel" => 2,
        m => return Err(format!("mode {m:?}")),
    };
    SaParams::new(
        mode,
        int(field(o, "encr")?, "encr")?,
        int(field(o, "encr_key_bits")?, "encr_key_bits")?,
        int(field(o, "integ")?, "integ")?,
        text(field(o, "initiator_addr")?, "initiator_addr")?,
        text(field(o, "responder_addr")?, "responder_addr")?,
        selectors(field(o, "tsi")?, "tsi")?,
        selectors(field(o, "tsr")?, "tsr")?,
        opt_port(o, "natt_initiator_port")?,
        opt_port(o, "natt_responder_port")?,
        opt_int(o, "replay_window", 128u32)?,
    )
    .map_err(|e| e.0)
}

/// Python's `json.dumps` string form (`ensure_ascii=True`).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_opt(out: &mut String, v: Option<u16>) {
    match v {
        Some(p) => out.push_str(&p.to_string()),
        None => out.push_str("null"),
    }
}

fn push_selectors(out: &mut String, ts: &[TrafficSelector]) {
    out.push('[');
    for (i, t) in ts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"end_addr\":");
        push_json_str(out, &t.end_addr);
        out.push_str(&format!(
            ",\"end_port\":{},\"protocol\":{},",
            t.end_port, t.protocol
        ));
        out.push_str("\"start_addr\":");
        push_json_str(out, &t.start_addr);
        out.push_str(&format!(",\"start_port\":{}}}", t.start_port));
    }
    out.push(']');
}

/// `json.dumps(p.to_json(), sort_keys=True, separators=(",", ":"))`.
pub fn canonical_json(p: &SaParams) -> String {
    let mut out = String::with_capacity(320);
    out.push_str(&format!(
        "{{\"encr\":{},\"encr_key_bits\":{},\"initiator_addr\":",
        p.encr, p.encr_key_bits
    ));
    push_json_str(&mut out, &p.initiator_addr);
    out.push_str(&format!(",\"integ\":{},\"mode\":", p.integ));
    out.push_str(if p.mode == 1 {
        "\"transport\""
    } else {
        "\"tunnel\""
    });
    out.push_str(",\"natt_initiator_port\":");
    push_opt(&mut out, p.natt_initiator_port);
    out.push_str(",\"natt_responder_port\":");
    push_opt(&mut out, p.natt_responder_port);
    out.push_str(&format!(
        ",\"replay_window\":{},\"responder_addr\":",
        p.replay_window
    ));
    push_json_str(&mut out, &p.responder_addr);
    out.push_str(",\"tsi\":");
    push_selectors(&mut out, &p.tsi);
    out.push_str(",\"tsr\":");
    push_selectors(&mut out, &p.tsr);
    out.push('}');
    out
}

/// Parsed parameters by their text, and the text of a parsed value by its identity (the
/// successor of a credential shares its `Arc`): `store/codec.py`'s two memos.  Bounded:
/// cleared when full (a miss costs one parse).
pub struct ParamsMemo {
    by_text: HashMap<Arc<str>, Arc<SaParams>>,
    text_by_ptr: HashMap<usize, (Arc<SaParams>, Arc<str>)>,
    cap: usize,
}

impl ParamsMemo {
    pub fn new(cap: usize) -> Self {
        ParamsMemo {
            by_text: HashMap::new(),
            text_by_ptr: HashMap::new(),
            cap: cap.max(1),
        }
    }

    pub fn parse(&mut self, text_: &str) -> Result<Arc<SaParams>, String> {
        if let Some(p) = self.by_text.get(text_) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(parse_params(text_)?);
        if self.by_text.len() >= self.cap {
            self.by_text.clear();
            self.text_by_ptr.clear();
        }
        let t: Arc<str> = Arc::from(text_);
        self.by_text.insert(Arc::clone(&t), Arc::clone(&p));
        self.text_by_ptr
            .insert(Arc::as_ptr(&p) as usize, (Arc::clone(&p), t));
        Ok(p)
    }

    /// The row text `p` was parsed from, if this memo parsed it (else its canonical text).
    pub fn text_of(&self, p: &Arc<SaParams>) -> Arc<str> {
        match self.text_by_ptr.get(&(Arc::as_ptr(p) as usize)) {
            Some((held, t)) if Arc::ptr_eq(held, p) => Arc::clone(t),
            _ => Arc::from(canonical_json(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANON: &str = r#"{"encr":20,"encr_key_bits":256,"initiator_addr":"192.0.2.10","integ":0,"mode":"tunnel","natt_initiator_port":4500,"natt_responder_port":4500,"replay_window":128,"responder_addr":"198.51.100.1","tsi":[{"end_addr":"192.0.2.10","end_port":65535,"protocol":0,"start_addr":"192.0.2.10","start_port":0}],"tsr":[{"end_addr":"10.8.255.255","end_port":65535,"protocol":0,"start_addr":"10.8.0.0","start_port":0}]}"#;

    #[test]
    fn the_spec_example_round_trips() {
        let p = parse_params(CANON).unwrap();
        assert_eq!(canonical_json(&p), CANON);
    }

    #[test]
    fn lenient_python_forms_are_refused() {
        assert!(parse_params(&CANON.replace("\"encr\":20", "\"encr\":\"20\"")).is_err());
        assert!(parse_params(&CANON.replace("\"encr\":20", "\"encr\":20.0")).is_err());
        assert!(parse_params("[]").is_err());
        assert!(parse_params("{").is_err());
    }

    #[test]
    fn memo_keeps_the_row_text() {
        let mut m = ParamsMemo::new(4);
        let spaced = CANON.replace(",\"integ\"", ", \"integ\"");
        let p = m.parse(&spaced).unwrap();
        assert_eq!(&*m.text_of(&p), spaced.as_str());
        let q = Arc::new(parse_params(CANON).unwrap());
        assert_eq!(&*m.text_of(&q), CANON);
    }

    #[test]
    fn json_strings_escape_like_python() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"\\\n\u{1}é😀");
        assert_eq!(s, r#""a\"\\\n\u0001\u00e9\ud83d\ude00""#);
    }
}
