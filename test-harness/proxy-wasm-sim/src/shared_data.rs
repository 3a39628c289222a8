//! Shared data and shared queues: per-VM-id stores that outlive one `Host`, so tests can
//! model several worker VMs (each its own `Host`) sharing one store, as Envoy does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Status;

/// A shared-data + shared-queue store. Cheap to clone; clones share the same store.
#[derive(Debug, Clone, Default)]
pub struct SharedData {
    inner: Arc<Mutex<SharedStore>>,
}

#[derive(Debug, Default)]
pub(crate) struct SharedStore {
    values: BTreeMap<String, (Vec<u8>, u32)>,
    last_cas: u32,
    queues: BTreeMap<u32, SharedQueue>,
    last_queue_id: u32,
}

#[derive(Debug)]
struct SharedQueue {
    vm_id: String,
    name: String,
    /// The `Host` whose root context registered the queue (receives `on_queue_ready`).
    owner: u64,
    items: VecDeque<Vec<u8>>,
    ready_pending: bool,
}

impl SharedData {
    pub fn new() -> SharedData {
        SharedData::default()
    }

    fn lock(&self) -> MutexGuard<'_, SharedStore> {
        // A poisoned lock only means another test thread panicked mid-update; the data is
        // still a plain map, so keep going rather than cascading the panic.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Current value of a key (tests).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().values.get(key).map(|(v, _)| v.clone())
    }

    /// Sets a value from the test side (bumps the CAS like a guest write).
    pub fn set(&self, key: &str, value: &[u8]) {
        let _ = self.lock().set(key, value, 0);
    }

    /// Every key and value (tests).
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.lock()
            .values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut SharedStore) -> R) -> R {
        f(&mut self.lock())
    }
}

impl SharedStore {
    /// `(value, cas)`; NOT_FOUND when absent.
    pub(crate) fn get(&self, key: &str) -> Result<(Vec<u8>, u32), Status> {
        self.values.get(key).cloned().ok_or(Status::NotFound)
    }

    /// cpp-host semantics: a non-zero CAS must match the current one for an existing key;
    /// for a missing key the CAS is ignored. Every write gets a fresh non-zero CAS.
    pub(crate) fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
        if let Some((_, current)) = self.values.get(key) {
            if cas != 0 && cas != *current {
                return Err(Status::CasMismatch);
            }
        }
        self.last_cas = self.last_cas.wrapping_add(1);
        if self.last_cas == 0 {
            self.last_cas = 1;
        }
        self.values
            .insert(key.to_string(), (value.to_vec(), self.last_cas));
        Ok(())
    }

    /// Registering an existing (vm_id, name) returns the same id (and moves ownership).
    pub(crate) fn register_queue(&mut self, vm_id: &str, name: &str, owner: u64) -> u32 {
        if let Some((id, queue)) = self
            .queues
            .iter_mut()
            .find(|(_, q)| q.vm_id == vm_id && q.name == name)
        {
            queue.owner = owner;
            return *id;
        }
        self.last_queue_id += 1;
        let id = self.last_queue_id;
        self.queues.insert(
            id,
            SharedQueue {
                vm_id: vm_id.to_string(),
                name: name.to_string(),
                owner,
                items: VecDeque::new(),
                ready_pending: false,
            },
        );
        id
    }

    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.queues
            .iter()
            .find(|(_, q)| q.vm_id == vm_id && q.name == name)
            .map(|(id, _)| *id)
    }

    pub(crate) fn enqueue(&mut self, id: u32, value: &[u8]) -> Result<(), Status> {
        let queue = self.queues.get_mut(&id).ok_or(Status::NotFound)?;
        queue.items.push_back(value.to_vec());
        queue.ready_pending = true;
        Ok(())
    }

    pub(crate) fn dequeue(&mut self, id: u32) -> Result<Vec<u8>, Status> {
        let queue = self.queues.get_mut(&id).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }

    /// Queues owned by `owner` with an `on_queue_ready` notification due (cleared).
    pub(crate) fn take_ready(&mut self, owner: u64) -> Vec<u32> {
        self.queues
            .iter_mut()
            .filter(|(_, q)| q.owner == owner && q.ready_pending)
            .map(|(id, q)| {
                q.ready_pending = false;
                *id
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_rules_follow_cpp_host() {
        let shared = SharedData::new();
        shared.with(|s| {
            assert_eq!(s.get("k"), Err(Status::NotFound));
            assert_eq!(
                s.set("k", b"1", 99),
                Ok(()),
                "cas ignored for a missing key"
            );
            let (_, cas) = s.get("k").unwrap();
            assert_eq!(s.set("k", b"2", cas + 1), Err(Status::CasMismatch));
            assert_eq!(s.set("k", b"2", cas), Ok(()));
            assert_eq!(
                s.set("k", b"3", cas),
                Err(Status::CasMismatch),
                "cas is bumped per write"
            );
            assert_eq!(s.set("k", b"4", 0), Ok(()), "cas 0 = unconditional");
        });
        assert_eq!(shared.get("k"), Some(b"4".to_vec()));
    }
}
