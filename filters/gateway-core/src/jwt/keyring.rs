//! Remote JWKS lifecycle: a pure state machine, with time passed in by the glue.
//!
//! * **Refresh**: a fetch is due `refreshIntervalSeconds` after the last success; the first one
//!   immediately. After a failure the retry waits `minRefetchIntervalSeconds × 2^(failures-1)`,
//!   capped at the refresh interval.
//! * **Unknown `kid`** (rotation): at most one fetch in flight (single-flight); a new fetch only
//!   if none started within `minRefetchIntervalSeconds`, so a flood of random `kid`s cannot
//!   stampede the IdP. Otherwise the token is denied (or waits for the fetch in flight).
//! * **Last-known-good**: a failed fetch or a garbage/empty JWKS never replaces usable keys.
//! * **Bounded staleness — fail closed**: keys not refreshed successfully for
//!   `maxStalenessSeconds` (default 24 h) stop being used; tokens of that issuer are then
//!   denied (`keys_unavailable`) until a fetch succeeds. Tokens live minutes to hours, so
//!   after a day-long IdP outage hardly any valid token remains, while an attacker who keeps us
//!   from refreshing (to keep a revoked, compromised key alive) gets a bounded window. The
//!   `key age` metric lets operators alert long before that point. Inline `jwks` keys are
//!   configuration and never go stale.
//! * **Sharing across worker VMs**: [`RemoteKeys::snapshot`] serializes the keys with a format
//!   version, a sequence number and the fetch time; [`RemoteKeys::adopt_snapshot`] takes a newer
//!   one written by another VM (proxy-wasm shared data), which counts as a successful refresh.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::config::{JwtAuthzConfig, RemoteJwksSettings};
use super::jwks::{JwksError, KeySet, SkippedKey};

const SNAPSHOT_FORMAT: u32 = 1;
/// Grace beyond the HTTP timeout before an unanswered fetch is considered lost.
const IN_FLIGHT_GRACE_SECONDS: u64 = 5;

/// What to do about a token whose `kid` is not in the current keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownKeyAction {
    /// Start a JWKS fetch now (marked in flight); retry the request when it completes.
    FetchNow,
    /// A fetch is already in flight; the request may wait for it.
    AwaitInFlight,
    /// Refetched too recently: deny now.
    Deny,
}

/// How old the remote keys are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFreshness {
    /// No successful fetch yet.
    Missing,
    /// Refreshed within the refresh interval.
    Fresh { age_seconds: u64 },
    /// Refresh overdue, still used (last-known-good).
    Stale { age_seconds: u64 },
    /// Older than `maxStalenessSeconds`: no longer used.
    Expired { age_seconds: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    /// The key set differs from the previous one.
    pub changed: bool,
    pub skipped: Vec<SkippedKey>,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("key snapshot is not valid")]
    Malformed,
    #[error("key snapshot has format {0}, expected {SNAPSHOT_FORMAT}")]
    UnknownFormat(u32),
    #[error("key snapshot holds an invalid JWKS: {0}")]
    Jwks(#[from] JwksError),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Snapshot {
    format: u32,
    sequence: u64,
    fetched_at: u64,
    jwks: Value,
}

/// One issuer's remote JWKS state.
#[derive(Debug)]
pub struct RemoteKeys {
    settings: RemoteJwksSettings,
    keys: Option<KeySet>,
    fetched_at: Option<u64>,
    sequence: u64,
    in_flight_since: Option<u64>,
    last_attempt_at: Option<u64>,
    next_fetch_at: u64,
    consecutive_failures: u32,
}

/// Remote key state for every issuer (index = issuer id; `None` = no `remoteJwks`).
#[derive(Debug)]
pub struct KeyRing {
    remote: Vec<Option<RemoteKeys>>,
}

// === impl RemoteKeys ===

impl RemoteKeys {
    pub fn new(settings: RemoteJwksSettings) -> Self {
        Self {
            settings,
            keys: None,
            fetched_at: None,
            sequence: 0,
            in_flight_since: None,
            last_attempt_at: None,
            next_fetch_at: 0,
            consecutive_failures: 0,
        }
    }

    pub fn settings(&self) -> &RemoteJwksSettings {
        &self.settings
    }

    /// Called on every tick: true if a scheduled fetch should start now (it is then in flight).
    pub fn poll(&mut self, now: u64) -> bool {
        self.expire_lost_fetch(now);
        if self.in_flight_since.is_some() || now < self.next_fetch_at {
            return false;
        }
        self.start_fetch(now);
        true
    }

    pub fn on_unknown_key(&mut self, now: u64) -> UnknownKeyAction {
        self.expire_lost_fetch(now);
        if self.in_flight_since.is_some() {
            return UnknownKeyAction::AwaitInFlight;
        }
        let min_interval = self.settings.min_refetch_interval_seconds;
        if self
            .last_attempt_at
            .is_some_and(|last| now < last.saturating_add(min_interval))
        {
            return UnknownKeyAction::Deny;
        }
        self.start_fetch(now);
        UnknownKeyAction::FetchNow
    }

    /// A fetch answered 200 with `body`. A body that is not a usable JWKS counts as a failure
    /// and leaves the current keys in place.
    pub fn on_fetch_success(&mut self, now: u64, body: &[u8]) -> Result<FetchReport, JwksError> {
        match KeySet::parse_jwks(body) {
            Ok(parsed) => {
                let changed = self.keys.as_ref() != Some(&parsed.keys);
                self.accept(parsed.keys, now, self.sequence.saturating_add(1));
                Ok(FetchReport {
                    changed,
                    skipped: parsed.skipped,
                })
            }
            Err(error) => {
                self.on_fetch_failure(now);
                Err(error)
            }
        }
    }

    /// A fetch failed (network error, timeout, non-200).
    pub fn on_fetch_failure(&mut self, now: u64) {
        self.in_flight_since = None;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let exponent = self.consecutive_failures.saturating_sub(1).min(16);
        let backoff = self
            .settings
            .min_refetch_interval_seconds
            .saturating_mul(1 << exponent);
        self.next_fetch_at =
            now.saturating_add(backoff.min(self.settings.refresh_interval_seconds));
    }

    /// The keys to verify with at `now`; `None` if never fetched or past `maxStalenessSeconds`.
    pub fn keys(&self, now: u64) -> Option<&KeySet> {
        match self.freshness(now) {
            KeyFreshness::Fresh { .. } | KeyFreshness::Stale { .. } => self.keys.as_ref(),
            KeyFreshness::Missing | KeyFreshness::Expired { .. } => None,
        }
    }

    pub fn freshness(&self, now: u64) -> KeyFreshness {
        let Some(fetched_at) = self.fetched_at.filter(|_| self.keys.is_some()) else {
            return KeyFreshness::Missing;
        };
        let age_seconds = now.saturating_sub(fetched_at);
        if age_seconds > self.settings.max_staleness_seconds {
            KeyFreshness::Expired { age_seconds }
        } else if age_seconds > self.settings.refresh_interval_seconds {
            KeyFreshness::Stale { age_seconds }
        } else {
            KeyFreshness::Fresh { age_seconds }
        }
    }

    pub fn is_fetch_in_flight(&self) -> bool {
        self.in_flight_since.is_some()
    }

    /// Serialized keys for other worker VMs, or `None` before the first successful fetch.
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        let keys = self.keys.as_ref()?;
        let jwks = serde_json::from_str(&keys.to_jwks_json()).ok()?;
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            sequence: self.sequence,
            fetched_at: self.fetched_at?,
            jwks,
        };
        serde_json::to_vec(&snapshot).ok()
    }

    /// Takes keys another VM fetched, if they are newer than ours. Returns whether adopted.
    pub fn adopt_snapshot(&mut self, bytes: &[u8], now: u64) -> Result<bool, SnapshotError> {
        let snapshot: Snapshot =
            serde_json::from_slice(bytes).map_err(|_| SnapshotError::Malformed)?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::UnknownFormat(snapshot.format));
        }
        let is_newer = self
            .fetched_at
            .is_none_or(|ours| snapshot.fetched_at > ours);
        // A snapshot stamped in the future would never go stale: reject it.
        if !is_newer || snapshot.fetched_at > now.saturating_add(IN_FLIGHT_GRACE_SECONDS) {
            return Ok(false);
        }
        let parsed = KeySet::from_jwks_value(&snapshot.jwks)?;
        let sequence = snapshot.sequence.max(self.sequence);
        self.accept(parsed.keys, snapshot.fetched_at, sequence);
        Ok(true)
    }

    fn accept(&mut self, keys: KeySet, fetched_at: u64, sequence: u64) {
        self.keys = Some(keys);
        self.fetched_at = Some(fetched_at);
        self.sequence = sequence;
        self.in_flight_since = None;
        self.consecutive_failures = 0;
        self.next_fetch_at = fetched_at.saturating_add(self.settings.refresh_interval_seconds);
    }

    fn start_fetch(&mut self, now: u64) {
        self.in_flight_since = Some(now);
        self.last_attempt_at = Some(now);
    }

    fn expire_lost_fetch(&mut self, now: u64) {
        let deadline_seconds = self
            .settings
            .timeout_millis
            .div_ceil(1000)
            .saturating_add(IN_FLIGHT_GRACE_SECONDS);
        if self
            .in_flight_since
            .is_some_and(|since| now > since.saturating_add(deadline_seconds))
        {
            self.on_fetch_failure(now);
        }
    }
}

// === impl KeyRing ===

impl KeyRing {
    pub fn new(config: &JwtAuthzConfig) -> Self {
        let remote = config
            .issuers
            .iter()
            .map(|issuer| issuer.remote_jwks.clone().map(RemoteKeys::new))
            .collect();
        Self { remote }
    }

    pub fn remote(&self, issuer: usize) -> Option<&RemoteKeys> {
        self.remote.get(issuer).and_then(Option::as_ref)
    }

    pub fn remote_mut(&mut self, issuer: usize) -> Option<&mut RemoteKeys> {
        self.remote.get_mut(issuer).and_then(Option::as_mut)
    }

    /// Issuers with remote keys, with their state.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut RemoteKeys)> {
        self.remote
            .iter_mut()
            .enumerate()
            .filter_map(|(issuer, remote)| remote.as_mut().map(|remote| (issuer, remote)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwt::jwks::tests::{ec_jwk, ed_jwk};

    fn settings() -> RemoteJwksSettings {
        RemoteJwksSettings {
            cluster: "idp".to_owned(),
            authority: "idp.example".to_owned(),
            path: "/jwks".to_owned(),
            refresh_interval_seconds: 300,
            timeout_millis: 2000,
            min_refetch_interval_seconds: 30,
            max_staleness_seconds: 3600,
        }
    }

    fn jwks(keys: &[serde_json::Value]) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn schedules_refreshes_and_backs_off_on_failure() {
        let mut remote = RemoteKeys::new(settings());
        assert_eq!(remote.freshness(0), KeyFreshness::Missing);
        assert!(remote.poll(1_000), "first fetch is immediate");
        assert!(!remote.poll(1_001), "single flight");
        remote.on_fetch_failure(1_002);
        assert!(!remote.poll(1_031));
        assert!(remote.poll(1_032), "retry after minRefetchInterval");
        remote.on_fetch_failure(1_033);
        assert!(!remote.poll(1_092));
        assert!(remote.poll(1_093), "second retry after 2x");
        let report = remote
            .on_fetch_success(1_094, &jwks(&[ec_jwk("a")]))
            .unwrap();
        assert!(report.changed);
        assert!(!remote.poll(1_393));
        assert!(remote.poll(1_394), "periodic refresh");
        let report = remote
            .on_fetch_success(1_395, &jwks(&[ec_jwk("a")]))
            .unwrap();
        assert!(!report.changed);
    }

    #[test]
    fn a_lost_fetch_does_not_block_forever() {
        let mut remote = RemoteKeys::new(settings());
        assert!(remote.poll(0));
        assert!(remote.is_fetch_in_flight());
        assert!(!remote.poll(7));
        // 2 s timeout + 5 s grace: the fetch is considered failed, then backoff applies.
        assert!(!remote.poll(8));
        assert!(!remote.is_fetch_in_flight());
        assert!(remote.poll(38));
    }

    #[test]
    fn unknown_kid_refetch_is_single_flight_and_rate_limited() {
        let mut remote = RemoteKeys::new(settings());
        assert!(remote.poll(0));
        remote.on_fetch_success(1, &jwks(&[ec_jwk("a")])).unwrap();
        assert_eq!(
            remote.on_unknown_key(10),
            UnknownKeyAction::Deny,
            "fetched 10 s ago"
        );
        assert_eq!(remote.on_unknown_key(30), UnknownKeyAction::FetchNow);
        assert_eq!(remote.on_unknown_key(31), UnknownKeyAction::AwaitInFlight);
        remote
            .on_fetch_success(32, &jwks(&[ec_jwk("a"), ed_jwk("b")]))
            .unwrap();
        assert_eq!(remote.on_unknown_key(40), UnknownKeyAction::Deny);
        assert_eq!(remote.keys(40).map(KeySet::len), Some(2));
    }

    #[test]
    fn keeps_last_known_good_keys_then_fails_closed() {
        let mut remote = RemoteKeys::new(settings());
        assert!(remote.poll(0));
        remote.on_fetch_success(0, &jwks(&[ec_jwk("a")])).unwrap();
        let garbage: [&[u8]; 4] = [
            b"<html>oops</html>",
            b"{}",
            br#"{"keys":[]}"#,
            br#"{"keys":[{"kty":"oct","k":"AA"}]}"#,
        ];
        for body in garbage {
            assert!(remote.on_fetch_success(100, body).is_err());
            assert_eq!(remote.keys(100).map(KeySet::len), Some(1));
        }
        remote.on_fetch_failure(200);
        assert_eq!(
            remote.freshness(200),
            KeyFreshness::Fresh { age_seconds: 200 }
        );
        assert_eq!(
            remote.freshness(301),
            KeyFreshness::Stale { age_seconds: 301 }
        );
        assert!(remote.keys(3_600).is_some());
        assert_eq!(
            remote.freshness(3_601),
            KeyFreshness::Expired { age_seconds: 3_601 }
        );
        assert!(
            remote.keys(3_601).is_none(),
            "fail closed after maxStaleness"
        );
        assert!(remote.poll(4_000));
        remote
            .on_fetch_success(4_000, &jwks(&[ec_jwk("a")]))
            .unwrap();
        assert!(remote.keys(4_000).is_some(), "recovers on the next success");
    }

    #[test]
    fn snapshots_share_keys_between_vms() {
        let mut fetcher = RemoteKeys::new(settings());
        assert_eq!(fetcher.snapshot(), None);
        assert!(fetcher.poll(0));
        fetcher
            .on_fetch_success(100, &jwks(&[ec_jwk("a"), ed_jwk("b")]))
            .unwrap();
        let snapshot = fetcher.snapshot().unwrap();

        let mut follower = RemoteKeys::new(settings());
        assert_eq!(follower.adopt_snapshot(&snapshot, 105), Ok(true));
        assert_eq!(follower.keys(105), fetcher.keys(105));
        assert!(!follower.poll(399), "adopted keys count as a refresh");
        assert_eq!(
            follower.adopt_snapshot(&snapshot, 106),
            Ok(false),
            "not newer"
        );

        let mut stale = RemoteKeys::new(settings());
        assert_eq!(
            stale.adopt_snapshot(&snapshot, 50),
            Ok(false),
            "stamped in the future"
        );
        assert_eq!(
            stale.adopt_snapshot(b"junk", 200),
            Err(SnapshotError::Malformed)
        );
        let other_format = snapshot_with(|s| s["format"] = json!(2), &snapshot);
        assert_eq!(
            stale.adopt_snapshot(&other_format, 200),
            Err(SnapshotError::UnknownFormat(2))
        );
        let bad_keys = snapshot_with(|s| s["jwks"] = json!({"keys": []}), &snapshot);
        assert!(matches!(
            stale.adopt_snapshot(&bad_keys, 200),
            Err(SnapshotError::Jwks(_))
        ));
    }

    fn snapshot_with(edit: fn(&mut serde_json::Value), snapshot: &[u8]) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_slice(snapshot).unwrap();
        edit(&mut value);
        value.to_string().into_bytes()
    }
}
