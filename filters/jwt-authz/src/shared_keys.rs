//! Remote JWKS keys shared by the worker VMs of one `vm_id` through proxy-wasm shared data.
//!
//! Per JWKS source (cluster + authority + path) two shared-data entries exist:
//! * `jwt-authz/jwks/<source>`: the newest key snapshot ([`RemoteKeys::snapshot`]). A VM that
//!   fetched successfully writes it; every VM adopts it on its next tick when it is newer than
//!   its own keys, which counts as a successful refresh there.
//! * `jwt-authz/lease/<source>`: `<vm> <until-ms>`, the VM allowed to fetch and until when.
//!   Taken with compare-and-swap before a fetch, so N workers do not fetch the same JWKS N
//!   times. Released when the fetch succeeds; after a failure it is held for
//!   `minRefetchIntervalSeconds`, so an IdP outage sees one retry per interval from the whole
//!   gateway, not one per worker.
//!
//! Shared data lives as long as the `vm_id` and is keyed by source, so it survives
//! reconfiguration and VM reloads, and two plugins that name the same JWKS share its keys.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use gateway_core::jwt::config::RemoteJwksSettings;
use gateway_core::jwt::RemoteKeys;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

const VM_COUNTER_KEY: &str = "jwt-authz/vm-counter";
/// How long a fetch may hold the lease beyond its HTTP timeout.
const LEASE_GRACE_MILLIS: u64 = 2_000;

/// This VM's name in leases: a shared counter (unique in sequence) plus random bits (unique
/// even if two VMs race on the counter while it does not exist yet).
pub fn vm_identity() -> String {
    let random = RandomState::new().hash_one(VM_COUNTER_KEY);
    let mut number = 0u64;
    for _ in 0..8 {
        let (current, cas) = match hostcalls::get_shared_data(VM_COUNTER_KEY) {
            Ok(found) => found,
            Err(_) => break,
        };
        number = current
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_add(1);
        match hostcalls::set_shared_data(VM_COUNTER_KEY, Some(number.to_string().as_bytes()), cas) {
            Err(Status::CasMismatch) => continue,
            _ => break,
        }
    }
    format!("{number}.{random:016x}")
}

/// Shared-data bookkeeping of one issuer's remote JWKS in this VM.
#[derive(Debug)]
pub struct SharedKeys {
    snapshot_key: String,
    lease_key: String,
    /// CAS of the snapshot entry last looked at, to skip re-parsing an unchanged one.
    seen_snapshot_cas: Option<u32>,
}

/// Who may fetch now.
#[derive(Debug, PartialEq, Eq)]
pub enum Lease {
    /// Taken by this VM: fetch now.
    Acquired,
    /// Another VM fetches (or failed recently); wait for its snapshot.
    HeldElsewhere,
}

// === impl SharedKeys ===

impl SharedKeys {
    pub fn new(settings: &RemoteJwksSettings) -> Self {
        let source = format!(
            "{}|{}{}",
            settings.cluster, settings.authority, settings.path
        );
        Self {
            snapshot_key: format!("jwt-authz/jwks/{source}"),
            lease_key: format!("jwt-authz/lease/{source}"),
            seen_snapshot_cas: None,
        }
    }

    /// Adopts keys another VM published, if newer. Returns whether the keys changed.
    pub fn adopt(&mut self, remote: &mut RemoteKeys, now: u64) -> bool {
        let (bytes, cas) = match hostcalls::get_shared_data(&self.snapshot_key) {
            Ok((Some(bytes), cas)) => (bytes, cas),
            Ok((None, _)) => return false,
            Err(status) => {
                log::debug!("cannot read {}: {status:?}", self.snapshot_key);
                return false;
            }
        };
        if cas.is_some() && cas == self.seen_snapshot_cas {
            return false;
        }
        self.seen_snapshot_cas = cas;
        match remote.adopt_snapshot(&bytes, now) {
            Ok(adopted) => adopted,
            Err(error) => {
                log::warn!(
                    "ignoring shared key snapshot {}: {error}",
                    self.snapshot_key
                );
                false
            }
        }
    }

    /// Publishes this VM's keys after a successful fetch.
    pub fn publish(&mut self, remote: &RemoteKeys) {
        let Some(snapshot) = remote.snapshot() else {
            return;
        };
        if let Err(status) = hostcalls::set_shared_data(&self.snapshot_key, Some(&snapshot), None) {
            log::warn!("cannot publish keys to {}: {status:?}", self.snapshot_key);
        }
    }

    /// Whether another VM holds the lease at `now_ms`.
    pub fn held_elsewhere(&self, vm: &str, now_ms: u64) -> bool {
        matches!(self.read_lease(), Ok((Some((holder, until)), _)) if holder != vm && until > now_ms)
    }

    /// Takes the lease for a fetch that may last `timeout_millis`.
    pub fn acquire(&self, vm: &str, now_ms: u64, timeout_millis: u64) -> Lease {
        let (current, cas) = match self.read_lease() {
            Ok(found) => found,
            // Unreadable shared data must not stop key refresh: fetch without coordination.
            Err(()) => return Lease::Acquired,
        };
        if let Some((holder, until)) = current {
            if holder != vm && until > now_ms {
                return Lease::HeldElsewhere;
            }
        }
        let until = now_ms
            .saturating_add(timeout_millis)
            .saturating_add(LEASE_GRACE_MILLIS);
        let value = format!("{vm} {until}");
        match hostcalls::set_shared_data(&self.lease_key, Some(value.as_bytes()), cas) {
            Ok(()) => Lease::Acquired,
            Err(Status::CasMismatch) => Lease::HeldElsewhere,
            Err(_) => Lease::Acquired,
        }
    }

    /// Keeps the lease (so no other VM fetches) until `until_ms`; `now` releases it.
    pub fn hold_until(&self, vm: &str, until_ms: u64) {
        let value = format!("{vm} {until_ms}");
        if let Err(status) =
            hostcalls::set_shared_data(&self.lease_key, Some(value.as_bytes()), None)
        {
            log::debug!("cannot update {}: {status:?}", self.lease_key);
        }
    }

    /// `(holder, until_ms)` if a lease was ever written, with the entry's CAS.
    #[allow(clippy::type_complexity)]
    fn read_lease(&self) -> Result<(Option<(String, u64)>, Option<u32>), ()> {
        let (bytes, cas) = hostcalls::get_shared_data(&self.lease_key).map_err(|_| ())?;
        let lease = bytes
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| {
                let (holder, until) = text.split_once(' ')?;
                Some((holder.to_owned(), until.parse::<u64>().ok()?))
            });
        Ok((lease, cas))
    }
}
