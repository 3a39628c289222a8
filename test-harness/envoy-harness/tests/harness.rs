//! The harness itself: Envoy starts on free ports, routes to a mock upstream, reports a
//! broken config with its own log, and is gone once dropped.

use envoy_harness::{client, config, EnvoyProcess, MockUpstream};

const PROXY_TO_MOCK: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: {{port:admin}}}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: {{port:edge}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters: [{{var:ROUTER}}]
  clusters: [{{var:UPSTREAM}}]
"#;

#[test]
fn proxies_to_the_mock_upstream_and_stops_on_drop() {
    let upstream = MockUpstream::start("svc-echo").unwrap();
    let envoy = EnvoyProcess::builder(PROXY_TO_MOCK)
        .var("ROUTER", config::inline(&config::router()))
        .var(
            "UPSTREAM",
            config::inline(&config::loopback_cluster("upstream", upstream.port())),
        )
        .start()
        .unwrap();
    let edge = envoy.port("edge").unwrap();

    let ok = client::get(edge, "/orders?id=1").unwrap();
    assert_eq!(ok.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
    assert_eq!(body["upstream"], "svc-echo");
    assert_eq!(body["path"], "/orders?id=1");
    assert_eq!(
        ok.header("x-powered-by"),
        Some("PHP/8"),
        "the mock leaks, Envoy passes it"
    );

    let failed = client::get_with(edge, "/orders", &[("x-mock-status", "503")]).unwrap();
    assert_eq!(failed.status, 503);
    assert_eq!(upstream.request_count("GET", "/orders"), 2);
    assert_eq!(upstream.received()[1].header("x-mock-status"), Some("503"));
    assert!(
        envoy
            .stat("cluster.upstream.upstream_rq_completed")
            .unwrap()
            .unwrap()
            >= 2
    );
    assert!(envoy
        .admin_get("/stats?filter=^http\\.edge\\.")
        .unwrap()
        .contains("downstream_rq"));

    let pid = libc::pid_t::try_from(envoy.pid().unwrap()).unwrap();
    drop(envoy);
    // Reaped: the pid no longer names a process of ours.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
    assert!(
        client::get(edge, "/").is_err(),
        "nothing listens on the edge port any more"
    );
}

#[test]
fn a_broken_config_fails_start_with_envoys_own_words() {
    let broken = PROXY_TO_MOCK.replace(
        "stat_prefix: edge",
        "stat_prefix: edge\n          no_such_field: 1",
    );
    let error = EnvoyProcess::builder(broken)
        .var("ROUTER", config::inline(&config::router()))
        .var(
            "UPSTREAM",
            config::inline(&config::loopback_cluster("upstream", 9)),
        )
        .start()
        .err()
        .expect("Envoy must refuse an unknown field");
    let message = error.to_string();
    assert!(message.contains("Envoy log tail"), "{message}");
    assert!(message.contains("no_such_field"), "{message}");
}

#[test]
fn templates_must_name_an_admin_port_and_every_var() {
    let no_admin = EnvoyProcess::start("static_resources: {}").err().unwrap();
    assert!(
        no_admin.to_string().contains("{{port:admin}}"),
        "{no_admin}"
    );
    let missing_var = EnvoyProcess::start(PROXY_TO_MOCK).err().unwrap();
    assert!(
        missing_var.to_string().contains("{{var:ROUTER}}"),
        "{missing_var}"
    );
}
