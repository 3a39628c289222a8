//! `proxy_define_metric` / `increment` / `record` / `get`, with Envoy's id scheme
//! (`id & 3` = type, ids step by 4: counters 4, 8, …; gauges 5, 9, …; histograms 6, 10, …).

use std::collections::BTreeMap;

use wasmtime::{Caller, Result};

use super::memory::{read_string, write_u32, write_u64};
use super::restrict;
use crate::error::Status;
use crate::state::HostState;
use crate::types::MetricKind;

const ID_STEP: u32 = 4;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MetricValue {
    Counter(u64),
    Gauge(i64),
    Histogram(Vec<u64>),
}

#[derive(Debug)]
pub(crate) struct Metrics {
    /// id → (kind, name). Several ids can point at one stat (Envoy gives every define call
    /// a new id, even for a name defined before).
    ids: BTreeMap<u32, (MetricKind, String)>,
    /// (name, kind) → value, in definition order for `metrics()`.
    values: Vec<(String, MetricKind, MetricValue)>,
    last_ids: [u32; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ids: BTreeMap::new(),
            values: Vec::new(),
            last_ids: [0, 1, 2],
        }
    }
}

fn kind_index(kind: MetricKind) -> usize {
    match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    }
}

impl Metrics {
    pub fn define(&mut self, kind: MetricKind, name: &str) -> u32 {
        let slot = kind_index(kind);
        let id = self
            .last_ids
            .get(slot)
            .copied()
            .unwrap_or(0)
            .wrapping_add(ID_STEP);
        if let Some(last) = self.last_ids.get_mut(slot) {
            *last = id;
        }
        self.ids.insert(id, (kind, name.to_string()));
        if self.value(name, kind).is_none() {
            let initial = match kind {
                MetricKind::Counter => MetricValue::Counter(0),
                MetricKind::Gauge => MetricValue::Gauge(0),
                MetricKind::Histogram => MetricValue::Histogram(Vec::new()),
            };
            self.values.push((name.to_string(), kind, initial));
        }
        id
    }

    pub fn value(&self, name: &str, kind: MetricKind) -> Option<&MetricValue> {
        self.values
            .iter()
            .find(|(n, k, _)| n == name && *k == kind)
            .map(|(_, _, v)| v)
    }

    fn value_by_id(&mut self, id: u32) -> Result<&mut MetricValue, Status> {
        let (kind, name) = self.ids.get(&id).cloned().ok_or(Status::NotFound)?;
        self.values
            .iter_mut()
            .find(|(n, k, _)| *n == name && *k == kind)
            .map(|(_, _, v)| v)
            .ok_or(Status::NotFound)
    }

    pub fn increment(&mut self, id: u32, delta: i64) -> Status {
        match self.value_by_id(id) {
            Err(status) => status,
            // Envoy: counters only go up; increment(<= 0) is BAD_ARGUMENT.
            Ok(MetricValue::Counter(_)) if delta <= 0 => Status::BadArgument,
            Ok(MetricValue::Counter(value)) => {
                *value = value.saturating_add(delta.unsigned_abs());
                Status::Ok
            }
            Ok(MetricValue::Gauge(value)) => {
                *value = value.saturating_add(delta);
                Status::Ok
            }
            Ok(MetricValue::Histogram(_)) => Status::BadArgument,
        }
    }

    pub fn record(&mut self, id: u32, value: u64) -> Status {
        match self.value_by_id(id) {
            Err(status) => status,
            // Envoy: record on a counter adds, on a gauge sets.
            Ok(MetricValue::Counter(current)) => {
                *current = current.saturating_add(value);
                Status::Ok
            }
            Ok(MetricValue::Gauge(current)) => {
                *current = value as i64;
                Status::Ok
            }
            Ok(MetricValue::Histogram(samples)) => {
                samples.push(value);
                Status::Ok
            }
        }
    }

    pub fn get(&mut self, id: u32) -> Result<u64, Status> {
        match self.value_by_id(id)? {
            MetricValue::Counter(value) => Ok(*value),
            MetricValue::Gauge(value) => Ok(*value as u64),
            MetricValue::Histogram(_) => Err(Status::BadArgument),
        }
    }

    pub fn all(&self) -> Vec<(String, MetricKind, i64)> {
        self.values
            .iter()
            .map(|(name, kind, value)| {
                let number = match value {
                    MetricValue::Counter(v) => i64::try_from(*v).unwrap_or(i64::MAX),
                    MetricValue::Gauge(v) => *v,
                    MetricValue::Histogram(samples) => {
                        i64::try_from(samples.len()).unwrap_or(i64::MAX)
                    }
                };
                (name.clone(), *kind, number)
            })
            .collect()
    }
}

pub(crate) fn proxy_define_metric(
    mut caller: Caller<'_, HostState>,
    kind: i32,
    name_ptr: i32,
    name_len: i32,
    ret_id: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_define_metric";
    restrict(&caller, CALL)?;
    let kind = match kind {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        2 => MetricKind::Histogram,
        _ => return Ok(Status::BadArgument.code()),
    };
    let name = read_string(&caller, CALL, name_ptr, name_len)?;
    let id = caller.data_mut().metrics.define(kind, &name);
    write_u32(&mut caller, CALL, ret_id, id)?;
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_increment_metric(
    mut caller: Caller<'_, HostState>,
    id: i32,
    delta: i64,
) -> Result<i32> {
    restrict(&caller, "proxy_increment_metric")?;
    Ok(caller.data_mut().metrics.increment(id as u32, delta).code())
}

pub(crate) fn proxy_record_metric(
    mut caller: Caller<'_, HostState>,
    id: i32,
    value: i64,
) -> Result<i32> {
    restrict(&caller, "proxy_record_metric")?;
    Ok(caller
        .data_mut()
        .metrics
        .record(id as u32, value as u64)
        .code())
}

pub(crate) fn proxy_get_metric(
    mut caller: Caller<'_, HostState>,
    id: i32,
    ret_value: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_metric";
    restrict(&caller, CALL)?;
    match caller.data_mut().metrics.get(id as u32) {
        Ok(value) => {
            write_u64(&mut caller, CALL, ret_value, value)?;
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_metric_ids_and_rules() {
        let mut metrics = Metrics::default();
        let counter = metrics.define(MetricKind::Counter, "c");
        let gauge = metrics.define(MetricKind::Gauge, "g");
        let histogram = metrics.define(MetricKind::Histogram, "h");
        assert_eq!((counter, gauge, histogram), (4, 5, 6));
        let counter_again = metrics.define(MetricKind::Counter, "c");
        assert_eq!(counter_again, 8, "every define gets a new id");
        assert_eq!(metrics.increment(counter, 0), Status::BadArgument);
        assert_eq!(metrics.increment(counter, -1), Status::BadArgument);
        assert_eq!(metrics.increment(counter, 2), Status::Ok);
        assert_eq!(
            metrics.record(counter_again, 3),
            Status::Ok,
            "record adds on counters"
        );
        assert_eq!(metrics.get(counter), Ok(5));
        assert_eq!(metrics.increment(gauge, -3), Status::Ok);
        assert_eq!(metrics.get(gauge), Ok((-3i64) as u64));
        assert_eq!(metrics.get(histogram), Err(Status::BadArgument));
        assert_eq!(metrics.increment(histogram, 1), Status::BadArgument);
        assert_eq!(metrics.increment(99, 1), Status::NotFound);
    }
}
