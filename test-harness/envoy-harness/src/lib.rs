//! Real-Envoy test harness.
