//! Counters for metrics (the same names as the Python core's `stats` Counter).

/// Every counter either engine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Stat {
    Datagrams,
    DropMalformed,
    Msg1,
    Msg2,
    Msg3,
    Nack,
    RetransmitAnswered,
    DropOverload,
    LateAnswer,
    DropReplayedMsg3,
    Msg3CachedMsg2,
    CredentialCacheHit,
    CommitRequested,
    CommitFailed,
    Complete,
    ExpiredAwaitCredential1,
    ExpiredAwaitCredential3,
    ExpiredAwaitCommit,
    DropAfterDone,
    Msg3Resent,
    DropWrongState,
    DropWrongSpi,
    DropNackMsg3,
    RetryPrevious,
    Timeout,
    Retransmit,
    DropMode,
    DropParams,
    DropUnexpectedKe,
    DropBadKe,
    DropBadMac,
    NackUnknownOrRefused,
    NackModeMismatch,
    NackParamsMismatch,
    NackInternal,
    NackBadKeyShare,
    NackStaleOrForgedCookie,
    NackBadMac,
    NackCommitFailed,
    NackX25519Required,
    NackPaperDisabled,
    NackMlkemRequired,
    NackLineage,
    NackMlkemBusy,
    NackMlkemStateMissing,
    PqRefused,
    DropCommitting,
}

pub const N_STATS: usize = 47;

impl Stat {
    pub const ALL: [Stat; N_STATS] = [
        Stat::Datagrams,
        Stat::DropMalformed,
        Stat::Msg1,
        Stat::Msg2,
        Stat::Msg3,
        Stat::Nack,
        Stat::RetransmitAnswered,
        Stat::DropOverload,
        Stat::LateAnswer,
        Stat::DropReplayedMsg3,
        Stat::Msg3CachedMsg2,
        Stat::CredentialCacheHit,
        Stat::CommitRequested,
        Stat::CommitFailed,
        Stat::Complete,
        Stat::ExpiredAwaitCredential1,
        Stat::ExpiredAwaitCredential3,
        Stat::ExpiredAwaitCommit,
        Stat::DropAfterDone,
        Stat::Msg3Resent,
        Stat::DropWrongState,
        Stat::DropWrongSpi,
        Stat::DropNackMsg3,
        Stat::RetryPrevious,
        Stat::Timeout,
        Stat::Retransmit,
        Stat::DropMode,
        Stat::DropParams,
        Stat::DropUnexpectedKe,
        Stat::DropBadKe,
        Stat::DropBadMac,
        Stat::NackUnknownOrRefused,
        Stat::NackModeMismatch,
        Stat::NackParamsMismatch,
        Stat::NackInternal,
        Stat::NackBadKeyShare,
        Stat::NackStaleOrForgedCookie,
        Stat::NackBadMac,
        Stat::NackCommitFailed,
        Stat::NackX25519Required,
        Stat::NackPaperDisabled,
        Stat::NackMlkemRequired,
        Stat::NackLineage,
        Stat::NackMlkemBusy,
        Stat::NackMlkemStateMissing,
        Stat::PqRefused,
        Stat::DropCommitting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stat::Datagrams => "datagrams",
            Stat::DropMalformed => "drop_malformed",
            Stat::Msg1 => "msg1",
            Stat::Msg2 => "msg2",
            Stat::Msg3 => "msg3",
            Stat::Nack => "nack",
            Stat::RetransmitAnswered => "retransmit_answered",
            Stat::DropOverload => "drop_overload",
            Stat::LateAnswer => "late_answer",
            Stat::DropReplayedMsg3 => "drop_replayed_msg3",
            Stat::Msg3CachedMsg2 => "msg3_cached_msg2",
            Stat::CredentialCacheHit => "credential_cache_hit",
            Stat::CommitRequested => "commit_requested",
            Stat::CommitFailed => "commit_failed",
            Stat::Complete => "complete",
            Stat::ExpiredAwaitCredential1 => "expired_await_credential_1",
            Stat::ExpiredAwaitCredential3 => "expired_await_credential_3",
            Stat::ExpiredAwaitCommit => "expired_await_commit",
            Stat::DropAfterDone => "drop_after_done",
            Stat::Msg3Resent => "msg3_resent",
            Stat::DropWrongState => "drop_wrong_state",
            Stat::DropWrongSpi => "drop_wrong_spi",
            Stat::DropNackMsg3 => "drop_nack_msg3",
            Stat::RetryPrevious => "retry_previous",
            Stat::Timeout => "timeout",
            Stat::Retransmit => "retransmit",
            Stat::DropMode => "drop_mode",
            Stat::DropParams => "drop_params",
            Stat::DropUnexpectedKe => "drop_unexpected_ke",
            Stat::DropBadKe => "drop_bad_ke",
            Stat::DropBadMac => "drop_bad_mac",
            Stat::NackUnknownOrRefused => "nack_unknown_or_refused",
            Stat::NackModeMismatch => "nack_mode_mismatch",
            Stat::NackParamsMismatch => "nack_params_mismatch",
            Stat::NackInternal => "nack_internal",
            Stat::NackBadKeyShare => "nack_bad_key_share",
            Stat::NackStaleOrForgedCookie => "nack_stale_or_forged_cookie",
            Stat::NackBadMac => "nack_bad_mac",
            Stat::NackCommitFailed => "nack_commit_failed",
            Stat::NackX25519Required => "nack_x25519_required",
            Stat::PqRefused => "pq_refused",
            Stat::NackMlkemStateMissing => "nack_mlkem_state_missing",
            Stat::NackMlkemBusy => "nack_mlkem_busy",
            Stat::NackLineage => "nack_lineage",
            Stat::NackMlkemRequired => "nack_mlkem_required",
            Stat::NackPaperDisabled => "nack_paper_disabled",
            Stat::DropCommitting => "drop_committing",
        }
    }

    /// `nack_<reason>` for a refusal reason (an unknown reason counts as `nack_internal`).
    pub fn nack_reason(reason: &str) -> Stat {
        match reason {
            "unknown_or_refused" => Stat::NackUnknownOrRefused,
            "mode_mismatch" => Stat::NackModeMismatch,
            "params_mismatch" => Stat::NackParamsMismatch,
            "bad_key_share" => Stat::NackBadKeyShare,
            "stale_or_forged_cookie" => Stat::NackStaleOrForgedCookie,
            "bad_mac" => Stat::NackBadMac,
            "commit_failed" => Stat::NackCommitFailed,
            "x25519_required" => Stat::NackX25519Required,
            "paper_disabled" => Stat::NackPaperDisabled,
            "mlkem_required" => Stat::NackMlkemRequired,
            "lineage" => Stat::NackLineage,
            "mlkem_busy" => Stat::NackMlkemBusy,
            "mlkem_state_missing" => Stat::NackMlkemStateMissing,
            _ => Stat::NackInternal,
        }
    }
}

/// A fixed array of counters: incrementing is one add, no hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats([u64; N_STATS]);

impl Default for Stats {
    fn default() -> Self {
        Stats([0; N_STATS])
    }
}

impl Stats {
    pub fn inc(&mut self, s: Stat) {
        if let Some(c) = self.0.get_mut(s as usize) {
            *c = c.saturating_add(1);
        }
    }

    pub fn get(&self, s: Stat) -> u64 {
        self.0.get(s as usize).copied().unwrap_or(0)
    }

    /// The non-zero counters, as Python's Counter holds them.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Stat::ALL
            .iter()
            .map(|s| (s.name(), self.get(*s)))
            .filter(|(_, v)| *v > 0)
    }
}
