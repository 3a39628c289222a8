//! The peer over real gRPC, with the rate-limit service YAML the gateway ships
//! (`filters/ratelimit-tagger/envoy/ratelimit-service.yaml`).

// Helpers outside `#[test]` functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rls_peer::proto::{code, unit, DescriptorEntry, RateLimitDescriptor, RateLimitRequest};
use rls_peer::proto::{DescriptorStatus, RateLimitResponse, UInt64Value};
use rls_peer::{should_rate_limit, Behaviour, ReceivedRequest, RlsPeer};

/// A Unix time at the start of an hour (and so of every shorter window), so counts in a test
/// cannot straddle a window boundary.
const HOUR_START: u64 = 1_767_225_600;

fn shipped_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../filters/ratelimit-tagger/envoy/ratelimit-service.yaml")
}

fn peer() -> RlsPeer {
    let peer = RlsPeer::from_yaml_file(shipped_config()).unwrap();
    peer.set_now(Some(HOUR_START));
    peer
}

fn descriptor(entries: &[(&str, &str)], hits_addend: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| DescriptorEntry {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        hits_addend: hits_addend.map(|value| UInt64Value { value }),
    }
}

fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "svc-gateway".into(),
        descriptors,
        hits_addend: 0,
    }
}

async fn call(peer: &RlsPeer, request: RateLimitRequest) -> RateLimitResponse {
    should_rate_limit(peer.addr(), request).await.unwrap()
}

/// `(code, policy name, remaining)` per descriptor, for readable assertions.
fn summary(response: &RateLimitResponse) -> Vec<(i32, Option<String>, u32)> {
    response
        .statuses
        .iter()
        .map(|s: &DescriptorStatus| {
            (
                s.code,
                s.current_limit.as_ref().map(|l| l.name.clone()),
                s.limit_remaining,
            )
        })
        .collect()
}

#[tokio::test]
async fn answers_the_descriptor_layout_the_gateway_sends() {
    let peer = peer();
    // What Envoy sends for a verified user's order (see the tagger README).
    let order = || {
        request(vec![
            descriptor(&[("client_ip", "203.0.113.7")], Some(1)),
            descriptor(&[("class", "order"), ("client_ip", "203.0.113.7")], Some(1)),
            descriptor(&[("class", "order"), ("user", "user-42")], Some(1)),
        ])
    };
    let first = call(&peer, order()).await;
    assert_eq!(first.overall_code, code::OK);
    assert_eq!(
        summary(&first),
        vec![
            (code::OK, Some("ip".into()), 1199),
            (code::OK, Some("order-ip".into()), 49),
            (code::OK, Some("order".into()), 9),
        ]
    );
    let limit = first.statuses[2].current_limit.as_ref().unwrap();
    assert_eq!((limit.requests_per_unit, limit.unit), (10, unit::SECOND));
    assert_eq!(
        first.statuses[0].duration_until_reset.map(|d| d.seconds),
        Some(60)
    );

    // 10 orders per second per user: the 11th is over the limit, and only that descriptor.
    for _ in 0..9 {
        assert_eq!(call(&peer, order()).await.overall_code, code::OK);
    }
    let eleventh = call(&peer, order()).await;
    assert_eq!(eleventh.overall_code, code::OVER_LIMIT);
    assert_eq!(
        summary(&eleventh),
        vec![
            (code::OK, Some("ip".into()), 1189),
            (code::OK, Some("order-ip".into()), 39),
            (code::OVER_LIMIT, Some("order".into()), 0),
        ]
    );

    // The next second is a new window.
    peer.set_now(Some(HOUR_START + 1));
    assert_eq!(call(&peer, order()).await.overall_code, code::OK);
}

#[tokio::test]
async fn per_user_limits_are_independent_of_ip_and_per_ip_of_user() {
    let peer = peer();
    let order = |ip: &str, user: &str| {
        request(vec![
            descriptor(&[("class", "order"), ("client_ip", ip)], None),
            descriptor(&[("class", "order"), ("user", user)], None),
        ])
    };
    // One user from ten addresses: the user bucket still holds at 10.
    for n in 0..10 {
        let ip = format!("198.51.100.{n}");
        assert_eq!(
            call(&peer, order(&ip, "alice")).await.overall_code,
            code::OK
        );
    }
    assert_eq!(
        call(&peer, order("198.51.100.99", "alice"))
            .await
            .overall_code,
        code::OVER_LIMIT
    );
    // Another user is unaffected, even from an address alice used.
    assert_eq!(
        call(&peer, order("198.51.100.0", "bob")).await.overall_code,
        code::OK
    );

    // Fifty users from one address: the address bucket holds at 50.
    peer.set_now(Some(HOUR_START + 10));
    for n in 0..50 {
        let user = format!("user-{n}");
        assert_eq!(
            call(&peer, order("203.0.113.9", &user)).await.overall_code,
            code::OK
        );
    }
    let farm = call(&peer, order("203.0.113.9", "user-50")).await;
    assert_eq!(
        summary(&farm),
        vec![
            (code::OVER_LIMIT, Some("order-ip".into()), 0),
            (code::OK, Some("order".into()), 9),
        ]
    );
}

#[tokio::test]
async fn counts_hits_addend_per_descriptor_then_per_request() {
    let peer = peer();
    // Withdrawals weigh 10 against a 60-per-hour bucket: six fit.
    let withdrawal = || {
        request(vec![descriptor(
            &[("class", "withdrawal"), ("user", "user-7")],
            Some(10),
        )])
    };
    for remaining in [50, 40, 30, 20, 10, 0] {
        let response = call(&peer, withdrawal()).await;
        assert_eq!(
            summary(&response),
            vec![(code::OK, Some("withdrawal".into()), remaining)]
        );
        assert_eq!(
            response.statuses[0].duration_until_reset.map(|d| d.seconds),
            Some(3600)
        );
    }
    assert_eq!(
        call(&peer, withdrawal()).await.overall_code,
        code::OVER_LIMIT
    );

    // Without a per-descriptor addend the request-wide one counts; 0 counts as 1.
    let mut weighted = request(vec![descriptor(&[("client_ip", "192.0.2.1")], None)]);
    weighted.hits_addend = 1000;
    assert_eq!(summary(&call(&peer, weighted).await)[0].2, 200);
    let unweighted = request(vec![descriptor(&[("client_ip", "192.0.2.1")], None)]);
    assert_eq!(summary(&call(&peer, unweighted).await)[0].2, 199);
    // The per-descriptor addend wins over the request-wide one.
    let mut both = request(vec![descriptor(&[("client_ip", "192.0.2.1")], Some(99))]);
    both.hits_addend = 1000;
    assert_eq!(summary(&call(&peer, both).await)[0].2, 100);
}

#[tokio::test]
async fn applies_nested_descriptors_like_envoyproxy_ratelimit() {
    let peer = peer();
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case<'_>] = &[
        (&[("client_ip", "203.0.113.7")], Some("ip")),
        (&[("client_ip", "unknown")], Some("unknown-client")),
        (
            &[("class", "public"), ("client_ip", "203.0.113.7")],
            Some("public-ip"),
        ),
        (
            &[("class", "public"), ("client_ip", "unknown")],
            Some("public-unknown-client"),
        ),
        (
            &[("class", "account_read"), ("user", "u")],
            Some("account-read"),
        ),
        // A limit applies only where the last entry lands: none on the class node itself,
        // none for a user outside a class, none for an address under a class without one.
        (&[("class", "order")], None),
        (&[("user", "u")], None),
        (
            &[("class", "account_read"), ("client_ip", "203.0.113.7")],
            None,
        ),
        (&[("class", "no-such-class"), ("user", "u")], None),
        (&[("class", "order"), ("user", "u"), ("extra", "x")], None),
    ];
    for (entries, want) in cases {
        let response = call(&peer, request(vec![descriptor(entries, None)])).await;
        assert_eq!(response.overall_code, code::OK, "{entries:?}");
        let got = response.statuses[0]
            .current_limit
            .as_ref()
            .map(|l| l.name.as_str());
        assert_eq!(got, *want, "{entries:?}");
    }

    // Another domain has no limits at all.
    let mut elsewhere = request(vec![descriptor(
        &[("client_ip", "203.0.113.7")],
        Some(5000),
    )]);
    elsewhere.domain = "other".into();
    let response = call(&peer, elsewhere).await;
    assert_eq!(response.overall_code, code::OK);
    assert_eq!(response.statuses[0].current_limit, None);
}

#[tokio::test]
async fn records_every_request_it_receives() {
    let peer = peer();
    let mut sent = request(vec![
        descriptor(&[("client_ip", "2001:db8:1:2::/64")], Some(2)),
        descriptor(&[("class", "account_read"), ("user", "sha256:ab")], None),
    ]);
    sent.hits_addend = 3;
    call(&peer, sent).await;
    call(
        &peer,
        request(vec![descriptor(&[("client_ip", "unknown")], None)]),
    )
    .await;

    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        peer.received(),
        vec![
            ReceivedRequest {
                domain: "svc-gateway".into(),
                descriptors: vec![
                    pairs(&[("client_ip", "2001:db8:1:2::/64")]),
                    pairs(&[("class", "account_read"), ("user", "sha256:ab")]),
                ],
                hits_addend: 3,
                descriptor_hits_addends: vec![Some(2), None],
            },
            ReceivedRequest {
                domain: "svc-gateway".into(),
                descriptors: vec![pairs(&[("client_ip", "unknown")])],
                hits_addend: 0,
                descriptor_hits_addends: vec![None],
            },
        ]
    );
    peer.clear_received();
    assert!(peer.received().is_empty());
}

#[tokio::test]
async fn fails_and_delays_on_demand() {
    let peer = peer();
    let probe = || request(vec![descriptor(&[("client_ip", "203.0.113.7")], None)]);

    peer.set_behaviour(Behaviour::Unavailable);
    let error = should_rate_limit(peer.addr(), probe()).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable);
    assert_eq!(peer.received().len(), 1, "a failed call is still recorded");

    peer.set_behaviour(Behaviour::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let response = call(&peer, probe()).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.overall_code, code::OK);

    peer.set_behaviour(Behaviour::Serve);
    let started = Instant::now();
    call(&peer, probe()).await;
    assert!(started.elapsed() < Duration::from_millis(300));

    // An empty descriptor list is refused, as envoyproxy/ratelimit does.
    let error = should_rate_limit(peer.addr(), request(vec![]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
}

#[test]
fn stops_when_dropped_and_rejects_bad_configs() {
    let peer = peer();
    let addr = peer.addr();
    assert!(TcpStream::connect(addr).is_ok());
    drop(peer);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening on {addr}"
    );

    for (yaml, want) in [
        ("domain: svc-gateway\ndescriptors: [", "YAML"),
        ("domain: ''\n", "domain is empty"),
        ("domain: d\nsurprise: 1\n", "unknown field `surprise`"),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n",
            "invalid rate limit unit `fortnight`",
        ),
    ] {
        let error = RlsPeer::from_yaml_str(yaml).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains(want)),
            "{yaml}: {error:?}"
        );
    }
}
