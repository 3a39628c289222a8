//! The RLS v3 messages the peer speaks, written by hand with prost's derive (no `protoc` on
//! these machines). Field numbers follow `envoy/service/ratelimit/v3/rls.proto` and
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`; the descriptor-level `hits_addend`
//! (3) and the `WEEK` unit (7) were read from the descriptors embedded in the Envoy 1.39.3
//! binary. Fields the peer has no use for (`limit` overrides, quotas, `raw_body`, dynamic
//! metadata) are left out: prost skips unknown fields on decode.

/// gRPC path of the one method.
pub const SHOULD_RATE_LIMIT_PATH: &str =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
/// Fully qualified service name (tonic routes on it).
pub const SERVICE_NAME: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// Request-wide addend; 0 means 1.
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<DescriptorEntry>,
    /// What a route's `hits_addend` produces (Envoy ≥ 1.33); overrides the request-wide one.
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DescriptorEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RateLimitResponse {
    /// `Code`: UNKNOWN = 0, OK = 1, OVER_LIMIT = 2.
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<ProtoDuration>,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RateLimit {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `Unit`: UNKNOWN = 0, SECOND = 1, MINUTE = 2, HOUR = 3, DAY = 4, MONTH = 5, YEAR = 6,
    /// WEEK = 7.
    #[prost(int32, tag = "2")]
    pub unit: i32,
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.UInt64Value`.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct UInt64Value {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

/// `RateLimitResponse.Code` wire values.
pub mod code {
    pub const UNKNOWN: i32 = 0;
    pub const OK: i32 = 1;
    pub const OVER_LIMIT: i32 = 2;
}

/// `RateLimitResponse.RateLimit.Unit` wire values.
pub mod unit {
    pub const UNKNOWN: i32 = 0;
    pub const SECOND: i32 = 1;
    pub const MINUTE: i32 = 2;
    pub const HOUR: i32 = 3;
    pub const DAY: i32 = 4;
    pub const MONTH: i32 = 5;
    pub const YEAR: i32 = 6;
    pub const WEEK: i32 = 7;
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Bytes as protoc would encode them, written out by hand from the .proto field numbers,
    /// so a wrong tag in the structs above cannot go unnoticed.
    #[test]
    fn decodes_the_wire_format_envoy_sends() {
        let entry = |key: &str, value: &str| {
            let mut out = vec![0x0a, key.len() as u8];
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&[0x12, value.len() as u8]);
            out.extend_from_slice(value.as_bytes());
            out
        };
        let first = entry("class", "order");
        let mut descriptor = vec![0x0a, first.len() as u8];
        descriptor.extend_from_slice(&first);
        // hits_addend (3) = UInt64Value { value (1) = 10 }; is_negative_hits (4) = false is
        // never sent; an unknown field must be skipped: limit (2) = { requests_per_unit = 5 }.
        descriptor.extend_from_slice(&[0x1a, 0x02, 0x08, 0x0a]);
        descriptor.extend_from_slice(&[0x12, 0x02, 0x08, 0x05]);
        let mut request = vec![0x0a, 0x0b];
        request.extend_from_slice(b"svc-gateway");
        request.extend_from_slice(&[0x12, descriptor.len() as u8]);
        request.extend_from_slice(&descriptor);
        request.extend_from_slice(&[0x18, 0x02]);

        let decoded = RateLimitRequest::decode(request.as_slice()).unwrap();
        assert_eq!(decoded.domain, "svc-gateway");
        assert_eq!(decoded.hits_addend, 2);
        assert_eq!(decoded.descriptors.len(), 1);
        assert_eq!(decoded.descriptors[0].entries[0].key, "class");
        assert_eq!(decoded.descriptors[0].entries[0].value, "order");
        assert_eq!(
            decoded.descriptors[0].hits_addend,
            Some(UInt64Value { value: 10 })
        );
    }

    #[test]
    fn encodes_the_wire_format_envoy_reads() {
        let response = RateLimitResponse {
            overall_code: code::OVER_LIMIT,
            statuses: vec![DescriptorStatus {
                code: code::OVER_LIMIT,
                current_limit: Some(RateLimit {
                    requests_per_unit: 3,
                    unit: unit::MINUTE,
                    name: "ip".into(),
                }),
                limit_remaining: 0,
                duration_until_reset: Some(ProtoDuration {
                    seconds: 42,
                    nanos: 0,
                }),
            }],
        };
        let status = [
            0x08, 0x02, // code
            0x12, 0x08, 0x08, 0x03, 0x10, 0x02, 0x1a, 0x02, b'i', b'p', // current_limit
            0x22, 0x02, 0x08, 0x2a, // duration_until_reset (limit_remaining 0 omitted)
        ];
        let mut want = vec![0x08, 0x02, 0x12, status.len() as u8];
        want.extend_from_slice(&status);
        assert_eq!(response.encode_to_vec(), want);
    }
}
