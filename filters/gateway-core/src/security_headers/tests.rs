//! Table-driven tests of the whole policy: configuration in, operations out.

use super::*;

/// Operations rendered as text, so tables stay readable: `-server`, `+x-frame-options: DENY`.
fn rendered(decision: &ResponseDecision<'_>) -> Vec<String> {
    decision
        .operations
        .iter()
        .map(|op| match op {
            HeaderOperation::Remove(name) => format!("-{name}"),
            HeaderOperation::Set(name, value) => format!("+{name}: {value}"),
        })
        .collect()
}

fn policy(json: &str) -> SecurityHeadersPolicy {
    SecurityHeadersPolicy::from_json(json.as_bytes()).unwrap()
}

fn decide(json: &str, path: Option<&str>, names: &[&str]) -> Vec<String> {
    let policy = policy(json);
    let decision =
        policy.decide_response(path.map(str::as_bytes), names.iter().map(|n| n.as_bytes()));
    rendered(&decision)
}

const API_SETS: &[&str] = &[
    "+strict-transport-security: max-age=31536000; includeSubDomains",
    "+content-security-policy: default-src 'none'; frame-ancestors 'none'",
    "+x-content-type-options: nosniff",
    "+x-frame-options: DENY",
    "+referrer-policy: no-referrer",
    "+permissions-policy: accelerometer=(), autoplay=(), camera=(), display-capture=(), \
     encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), \
     magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), \
     publickey-credentials-get=(), screen-wake-lock=(), serial=(), sync-xhr=(), usb=(), \
     web-share=(), xr-spatial-tracking=()",
    "+cross-origin-opener-policy: same-origin",
    "+cross-origin-resource-policy: same-origin",
    "+cache-control: no-store",
    "+x-permitted-cross-domain-policies: none",
];

fn api_sets_except(skip: &[&str]) -> Vec<String> {
    API_SETS
        .iter()
        .filter(|op| !skip.iter().any(|name| op.starts_with(&format!("+{name}:"))))
        .map(|op| op.to_string())
        .collect()
}

#[test]
fn empty_config_means_the_api_preset() {
    for config in ["", "  \n\t", "{}", r#"{"preset":"api"}"#] {
        assert_eq!(
            decide(config, Some("/api/v1/trade/orders"), &[]),
            API_SETS,
            "config {config:?}"
        );
    }
}

#[test]
fn api_preset_decisions() {
    struct Case {
        name: &'static str,
        response: &'static [&'static str],
        expected: Vec<String>,
    }
    let with = |removed: &[&str], sets: Vec<String>| {
        removed
            .iter()
            .map(|n| format!("-{n}"))
            .chain(sets)
            .collect::<Vec<_>>()
    };
    let cases = [
        Case {
            name: "no headers at all",
            response: &[],
            expected: with(&[], api_sets_except(&[])),
        },
        Case {
            name: "leaking headers removed, in any case",
            response: &[
                ":status",
                "Server",
                "X-Powered-By",
                "x-envoy-upstream-service-time",
                "content-type",
            ],
            expected: with(
                &["server", "x-powered-by", "x-envoy-upstream-service-time"],
                api_sets_except(&[]),
            ),
        },
        Case {
            name: "upstream cache-control is kept (ifAbsent)",
            response: &[":status", "cache-control"],
            expected: with(&[], api_sets_except(&["cache-control"])),
        },
        Case {
            name: "upstream x-frame-options is overwritten",
            response: &[":status", "x-frame-options", "x-frame-options"],
            expected: with(&[], api_sets_except(&[])),
        },
        Case {
            name: "names that only look similar are left alone",
            response: &["servers", "x-server-id", "cache-control2", "serv\u{e9}r"],
            expected: with(&[], api_sets_except(&[])),
        },
    ];
    let policy = policy("{}");
    for case in cases {
        let decision =
            policy.decide_response(Some(b"/x"), case.response.iter().map(|n| n.as_bytes()));
        assert_eq!(rendered(&decision), case.expected, "{}", case.name);
    }
}

#[test]
fn counts_what_it_did() {
    let policy = policy("{}");
    let names: &[&[u8]] = &[b"server", b"cache-control", b"x-powered-by"];
    let decision = policy.decide_response(None, names.iter().copied());
    assert_eq!(decision.headers_removed(), 2);
    assert_eq!(decision.headers_set(), API_SETS.len() - 1);
    assert_eq!(decision.upstream_values_kept, 1);
}

#[test]
fn odd_responses_never_break_the_decision() {
    let policy = policy("{}");
    // Non-UTF-8 names, empty names, huge maps.
    let odd: Vec<Vec<u8>> = vec![
        b"\xff\xfe".to_vec(),
        Vec::new(),
        vec![0u8; 3],
        b"SERVER".to_vec(),
    ];
    let decision = policy.decide_response(Some(b"/\xff?\xfe"), &odd);
    assert_eq!(decision.headers_removed(), 1);

    let huge: Vec<String> = (0..10_000).map(|i| format!("x-upstream-{i}")).collect();
    let decision = policy.decide_response(Some(b"/"), &huge);
    assert_eq!(rendered(&decision), API_SETS);
}

#[test]
fn top_level_edits() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "preset none with its own header",
            r#"{"preset":"none","headers":[{"name":"X-Custom","value":"1"}]}"#,
            &["server"],
            &["+x-custom: 1"],
        ),
        (
            "preset none removes only what it lists",
            r#"{"preset":"none","remove":["x-internal"]}"#,
            &["server", "X-Internal"],
            &["-x-internal"],
        ),
        (
            "ifAbsent keeps the upstream value",
            r#"{"preset":"none","headers":[{"name":"x-a","value":"ours","mode":"ifAbsent"},{"name":"x-b","value":"ours","mode":"overwrite"}]}"#,
            &["x-a", "x-b"],
            &["+x-b: ours"],
        ),
        (
            "ifAbsent sets when absent",
            r#"{"preset":"none","headers":[{"name":"x-a","value":"ours","mode":"ifAbsent"}]}"#,
            &["x-b"],
            &["+x-a: ours"],
        ),
        (
            "empty lists are fine",
            r#"{"preset":"none","remove":["server"],"keep":[]}"#,
            &["server"],
            &["-server"],
        ),
    ];
    for (name, config, response, expected) in cases {
        assert_eq!(decide(config, Some("/"), response), *expected, "{name}");
    }
}

#[test]
fn preset_entries_can_be_overridden_omitted_and_kept() {
    let config = r#"{
        "headers": [
            {"name": "Strict-Transport-Security", "value": "max-age=63072000; includeSubDomains; preload"},
            {"name": "x-frame-options", "value": "SAMEORIGIN", "mode": "ifAbsent"},
            {"name": "x-api-version", "value": "1"}
        ],
        "omit": ["x-permitted-cross-domain-policies"],
        "remove": ["x-internal-debug"],
        "keep": ["x-envoy-upstream-service-time"]
    }"#;
    let ops = decide(
        config,
        None,
        &[
            "x-envoy-upstream-service-time",
            "x-internal-debug",
            "x-frame-options",
            "server",
        ],
    );
    let mut expected = vec!["-server".to_owned(), "-x-internal-debug".to_owned()];
    expected
        .push("+strict-transport-security: max-age=63072000; includeSubDomains; preload".into());
    expected.extend(api_sets_except(&[
        "strict-transport-security",
        "x-frame-options",
        "x-permitted-cross-domain-policies",
    ]));
    expected.push("+x-api-version: 1".into());
    // HSTS keeps its preset position; additions come last.
    let position = |ops: &[String], prefix: &str| ops.iter().position(|op| op.starts_with(prefix));
    assert_eq!(position(&ops, "+strict"), Some(2));
    let mut sorted_ops = ops.clone();
    sorted_ops.sort();
    expected.sort();
    assert_eq!(sorted_ops, expected);
}

#[test]
fn routes_pick_the_longest_matching_prefix() {
    let config = r#"{
        "routes": [
            {"pathPrefix": "/api/v1/", "headers": [{"name": "x-scope", "value": "v1"}]},
            {"pathPrefix": "/api/v1/wallet", "headers": [{"name": "x-scope", "value": "wallet"}],
             "remove": ["x-wallet-node"]},
            {"pathPrefix": "/docs/", "omit": ["x-frame-options"],
             "headers": [{"name": "content-security-policy", "value": "frame-ancestors 'self'"}],
             "keep": ["server"]}
        ]
    }"#;
    let policy = policy(config);
    assert!(policy.needs_request_path());
    let scope_marker = |path: Option<&str>| {
        let decision = policy.decide_response(path.map(str::as_bytes), ["x-wallet-node", "server"]);
        rendered(&decision)
    };
    let cases: &[(Option<&str>, &[&str], &[&str])] = &[
        (
            Some("/api/v1/wallet/withdrawals?amount=1"),
            &["+x-scope: wallet", "-x-wallet-node", "-server"],
            &[],
        ),
        (
            Some("/api/v1/wallet"),
            &["+x-scope: wallet", "-x-wallet-node"],
            &[],
        ),
        (
            Some("/api/v1/wallets"),
            &["+x-scope: v1", "-server"],
            &["-x-wallet-node"],
        ),
        (
            Some("/api/v1/trade/orders"),
            &["+x-scope: v1"],
            &["-x-wallet-node"],
        ),
        (
            Some("/api/v2/x"),
            &["-server"],
            &["+x-scope: v1", "+x-scope: wallet"],
        ),
        (Some("/api/v1?/wallet/"), &["-server"], &["+x-scope: v1"]),
        (
            None,
            &["-server", "+x-frame-options: DENY"],
            &["+x-scope: v1"],
        ),
        (
            Some("/docs/index.html"),
            &["+content-security-policy: frame-ancestors 'self'"],
            &["+x-frame-options: DENY", "-server"],
        ),
    ];
    for (path, present, absent) in cases {
        let ops = scope_marker(*path);
        for op in *present {
            assert!(
                ops.iter().any(|o| o == op),
                "{path:?}: {op} missing from {ops:?}"
            );
        }
        for op in *absent {
            assert!(
                !ops.iter().any(|o| o == op),
                "{path:?}: unexpected {op} in {ops:?}"
            );
        }
    }
}

#[test]
fn config_order_of_routes_does_not_matter() {
    let a = policy(
        r#"{"routes":[{"pathPrefix":"/a","remove":["x-1"]},{"pathPrefix":"/a/b","remove":["x-2"]}]}"#,
    );
    let b = policy(
        r#"{"routes":[{"pathPrefix":"/a/b","remove":["x-2"]},{"pathPrefix":"/a","remove":["x-1"]}]}"#,
    );
    assert_eq!(a, b);
    let ops = rendered(&a.decide_response(Some(b"/a/b/c"), ["x-1", "x-2"]));
    assert!(ops.contains(&"-x-2".to_owned()) && !ops.contains(&"-x-1".to_owned()));
}

#[test]
fn summary_names_the_shape() {
    let policy = policy(r#"{"routes":[{"pathPrefix":"/a"}]}"#);
    assert_eq!(
        policy.summary().to_string(),
        "preset api, 10 headers set, 21 headers removed, 1 route overrides"
    );
}

#[test]
fn rejected_configs_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        // Not JSON / not the schema.
        (
            "{",
            "",
            "invalid JSON: EOF while parsing an object (line 1, column 1)",
        ),
        ("not json", "", "invalid JSON: expected ident"),
        (
            r#"{"routes":[{"pathPrefix":"/a",}]}"#,
            "routes[0]",
            "invalid JSON: trailing comma",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":"1"]}"#,
            "headers[0]",
            "invalid JSON: expected `,` or `}`",
        ),
        ("[]", "", "expected an object, found an array"),
        (r#"["api"]"#, "", "expected an object, found an array"),
        ("null", "", "expected an object, found null"),
        ("7", "", "expected an object, found a number"),
        (
            r#"{"preset":"api","extra":1}"#,
            "extra",
            "unknown field, expected one of: preset, headers, omit, remove, keep, routes",
        ),
        (
            r#"{"preset":"none","preset":"api"}"#,
            "preset",
            "field given twice",
        ),
        (
            r#"{"preset":"strict"}"#,
            "preset",
            r#"unknown value "strict", expected one of: api, none"#,
        ),
        (
            r#"{"preset":1.5}"#,
            "preset",
            "expected a string, found a number",
        ),
        (
            r#"{"headers":{}}"#,
            "headers",
            "expected an array, found an object",
        ),
        (
            r#"{"headers":null}"#,
            "headers",
            "expected an array, found null",
        ),
        (
            r#"{"headers":[["x-a","1"]]}"#,
            "headers[0]",
            "expected an object, found an array",
        ),
        (
            r#"{"headers":[{"name":"x-a"}]}"#,
            "headers[0]",
            "missing field `value`",
        ),
        (
            r#"{"headers":[{"value":"1"}]}"#,
            "headers[0]",
            "missing field `name`",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":5}]}"#,
            "headers[0].value",
            "expected a string, found a number",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":"1","mode":"append"}]}"#,
            "headers[0].mode",
            r#"unknown value "append", expected one of: overwrite, ifAbsent"#,
        ),
        (
            r#"{"headers":[{"name":"x-a","value":"1","mode":"IfAbsent"}]}"#,
            "headers[0].mode",
            "unknown value",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":"1","Mode":"ifAbsent"}]}"#,
            "headers[0].Mode",
            "unknown field, expected one of: name, value, mode",
        ),
        (
            r#"{"routes":[{"pathPrefix":"/a","headers":[{"name":"x","value":"1"}]},{"path_prefix":"/b"}]}"#,
            "routes[1].path_prefix",
            "unknown field, expected one of: pathPrefix, headers, omit, remove, keep",
        ),
        (
            r#"{"routes":[{"headers":[]}]}"#,
            "routes[0]",
            "missing field `pathPrefix`",
        ),
        (
            r#"{"routes":[{"pathPrefix":"/"},["/a"]]}"#,
            "routes[1]",
            "expected an object, found an array",
        ),
        (
            r#"{"routes":[{"pathPrefix":null}]}"#,
            "routes[0].pathPrefix",
            "expected a string, found null",
        ),
        (
            r#"{"remove":["server",7]}"#,
            "remove[1]",
            "expected a string, found a number",
        ),
        (
            r#"{"keep":"server"}"#,
            "keep",
            "expected an array, found a string",
        ),
        (
            r#"{"routes":[{"pathPrefix":"/a","omit":[true]}]}"#,
            "routes[0].omit[0]",
            "expected a string, found a boolean",
        ),
        // Header names.
        (
            r#"{"headers":[{"name":"","value":"1"}]}"#,
            "headers[0].name",
            "header name is empty",
        ),
        (
            r#"{"headers":[{"name":":status","value":"200"}]}"#,
            "headers[0].name",
            "pseudo-headers",
        ),
        (
            r#"{"headers":[{"name":"x a","value":"1"}]}"#,
            "headers[0].name",
            "RFC 9110 token",
        ),
        (
            r#"{"headers":[{"name":"x-a\r\nx-b","value":"1"}]}"#,
            "headers[0].name",
            "RFC 9110 token",
        ),
        (
            r#"{"headers":[{"name":"Content-Length","value":"1"}]}"#,
            "headers[0].name",
            "`content-length` frames the message",
        ),
        (
            r#"{"remove":["transfer-encoding"]}"#,
            "remove[0]",
            "Envoy owns it",
        ),
        (
            r#"{"remove":["x-ok","bad name"]}"#,
            "remove[1]",
            "RFC 9110 token",
        ),
        // Header values.
        (
            r#"{"headers":[{"name":"x-a","value":"1\r\nset-cookie: a=b"}]}"#,
            "headers[0].value",
            "control byte 0x0d",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":"a\nb"}]}"#,
            "headers[0].value",
            "control byte 0x0a",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":"a\u0000b"}]}"#,
            "headers[0].value",
            "control byte 0x00",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":"a\u007fb"}]}"#,
            "headers[0].value",
            "control byte 0x7f",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":""}]}"#,
            "headers[0].value",
            "header value is empty",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":" DENY"}]}"#,
            "headers[0].value",
            "whitespace",
        ),
        (
            r#"{"headers":[{"name":"x-a","value":"caf\u00e9"}]}"#,
            "headers[0].value",
            "non-ASCII byte at byte 3",
        ),
        // Duplicates and contradictions.
        (
            r#"{"headers":[{"name":"x-a","value":"1"},{"name":"X-A","value":"2"}]}"#,
            "headers[1].name",
            "`x-a` is listed twice (first at headers[0].name)",
        ),
        (
            r#"{"remove":["x-a","x-b","X-A"]}"#,
            "remove[2]",
            "listed twice (first at remove[0])",
        ),
        (
            r#"{"omit":["x-frame-options","x-frame-options"]}"#,
            "omit[1]",
            "listed twice",
        ),
        (
            r#"{"headers":[{"name":"x-frame-options","value":"DENY"}],"omit":["x-frame-options"]}"#,
            "omit[0]",
            "also listed in `headers`",
        ),
        (
            r#"{"remove":["server"],"keep":["server"]}"#,
            "keep[0]",
            "also listed in `remove`",
        ),
        (
            r#"{"omit":["x-fram-options"]}"#,
            "omit[0]",
            "`x-fram-options` is not set by the `api` preset",
        ),
        (
            r#"{"keep":["x-powered-by-typo"]}"#,
            "keep[0]",
            "is not removed by the `api` preset",
        ),
        (
            r#"{"preset":"none","omit":["x-frame-options"]}"#,
            "omit[0]",
            "not set by the `none` preset",
        ),
        (
            r#"{"headers":[{"name":"server","value":"gateway"}]}"#,
            "headers[0].name",
            "both set and removed",
        ),
        (
            r#"{"remove":["x-frame-options"]}"#,
            "remove[0]",
            "both set and removed",
        ),
        // Routes.
        (
            r#"{"routes":[{"pathPrefix":"api/"}]}"#,
            "routes[0].pathPrefix",
            "must start with '/'",
        ),
        (
            r#"{"routes":[{"pathPrefix":""}]}"#,
            "routes[0].pathPrefix",
            "must start with '/'",
        ),
        (
            r#"{"routes":[{"pathPrefix":"/a?x=1"}]}"#,
            "routes[0].pathPrefix",
            "must not contain '?'",
        ),
        (
            r#"{"routes":[{"pathPrefix":"/a"},{"pathPrefix":"/b"},{"pathPrefix":"/a"}]}"#,
            "routes[2].pathPrefix",
            "already used by routes[0].pathPrefix",
        ),
        (
            r#"{"routes":[{"pathPrefix":"/a","omit":["x-custom"]}]}"#,
            "routes[0].omit[0]",
            "not set by the top level",
        ),
        (
            r#"{"remove":["x-a"],"routes":[{"pathPrefix":"/a","keep":["x-b"]}]}"#,
            "routes[0].keep[0]",
            "not removed by the top level",
        ),
        (
            r#"{"routes":[{"pathPrefix":"/a","headers":[{"name":"x-powered-by","value":"1"}]}]}"#,
            "routes[0].headers[0].name",
            "both set and removed",
        ),
        (
            r#"{"routes":[{"pathPrefix":"/a"},{"pathPrefix":"/b","headers":[{"name":"x","value":"1"},{"name":"y","value":"a\rb"}]}]}"#,
            "routes[1].headers[1].value",
            "control byte 0x0d",
        ),
    ];
    for (config, path, message) in cases {
        let error = SecurityHeadersPolicy::from_json(config.as_bytes())
            .err()
            .unwrap_or_else(|| panic!("accepted {config}"));
        assert_eq!(error.path().as_str(), *path, "path for {config}: {error}");
        let text = error.to_string();
        assert!(text.contains(message), "message for {config}: {text}");
        let shown_path = if path.is_empty() { "(top level)" } else { path };
        assert!(text.starts_with(shown_path), "{text}");
    }
}

#[test]
fn non_utf8_config_is_rejected_not_trapped() {
    let error = SecurityHeadersPolicy::from_json(b"{\"preset\":\"\xff\"}").unwrap_err();
    assert_eq!(error.path().as_str(), "preset");
    assert!(error.to_string().contains("invalid JSON"), "{error}");
}

#[test]
fn limits() {
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("\"x-{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert!(
        SecurityHeadersPolicy::from_json(
            format!(r#"{{"remove":[{}]}}"#, list(MAX_LIST_LEN)).as_bytes()
        )
        .is_err(),
        "64 own + 21 preset removals exceed the bound"
    );
    let ok = format!(r#"{{"preset":"none","remove":[{}]}}"#, list(MAX_LIST_LEN));
    assert!(SecurityHeadersPolicy::from_json(ok.as_bytes()).is_ok());
    let too_many = format!(
        r#"{{"preset":"none","remove":[{}]}}"#,
        list(MAX_LIST_LEN + 1)
    );
    let error = SecurityHeadersPolicy::from_json(too_many.as_bytes()).unwrap_err();
    assert_eq!(error.path().as_str(), "remove");

    let long = "a".repeat(MAX_VALUE_LEN + 1);
    let config = format!(r#"{{"headers":[{{"name":"x-long","value":"{long}"}}]}}"#);
    let error = SecurityHeadersPolicy::from_json(config.as_bytes()).unwrap_err();
    assert_eq!(error.path().as_str(), "headers[0].value");

    let routes = (0..=MAX_ROUTES)
        .map(|i| format!(r#"{{"pathPrefix":"/r{i}"}}"#))
        .collect::<Vec<_>>()
        .join(",");
    let error = SecurityHeadersPolicy::from_json(format!(r#"{{"routes":[{routes}]}}"#).as_bytes())
        .unwrap_err();
    assert_eq!(error.path().as_str(), "routes");
}

/// Mutated configurations (bytes flipped, dropped, duplicated) must be answered with
/// `Ok` or `Err`, never a panic: a panic in `on_configure` kills the VM.
#[test]
fn mutated_configs_never_panic() {
    let seed_config = br#"{"preset":"api","headers":[{"name":"x-a","value":"1","mode":"ifAbsent"}],
        "omit":["x-frame-options"],"remove":["x-b"],"keep":["server"],
        "routes":[{"pathPrefix":"/a/","headers":[{"name":"x-c","value":"2"}],"keep":["x-powered-by"]}]}"#;
    let interesting = b"{}[]\",:\\\r\n\0\xff /?#aZ1";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: usize| {
        // xorshift64*: deterministic, dependency-free.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % bound.max(1)
    };
    for _ in 0..20_000 {
        let mut config = seed_config.to_vec();
        for _ in 0..=next(4) {
            let at = next(config.len());
            match next(3) {
                0 => config[at] = interesting[next(interesting.len())],
                1 => {
                    config.remove(at);
                }
                _ => config.insert(at, config[at]),
            }
        }
        if let Ok(policy) = SecurityHeadersPolicy::from_json(&config) {
            let _ = policy.decide_response(Some(&config[..next(config.len())]), [&config[..]]);
        }
    }
}

/// `Scope::rewrite` (what the filter hands the host in one call) must be exactly what
/// applying `decide_response`'s operations one by one gives, the way Envoy applies them:
/// a removal drops every entry of the name, a set drops them and appends one. Checked on
/// random responses: configured names in any case, repeats, unrelated names, no headers.
#[test]
fn rewrite_is_the_decision_applied() {
    let configs = [
        r#"{"preset":"api"}"#,
        r#"{"preset":"api","headers":[{"name":"x-a","value":"1","mode":"ifAbsent"},
            {"name":"X-B","value":"2"}],"remove":["x-c"],"keep":["server"],
            "routes":[{"pathPrefix":"/r","headers":[{"name":"cache-control","value":"private",
            "mode":"overwrite"}],"omit":["x-frame-options"]}]}"#,
        r#"{"preset":"none","headers":[{"name":"x-only","value":"v","mode":"ifAbsent"}]}"#,
        r#"{"preset":"none"}"#,
    ];
    let pool: &[&[u8]] = &[
        b":status",
        b"content-type",
        b"server",
        b"Server",
        b"x-powered-by",
        b"cache-control",
        b"Cache-Control",
        b"x-frame-options",
        b"x-envoy-upstream-service-time",
        b"x-a",
        b"X-A",
        b"x-b",
        b"x-c",
        b"x-only",
        b"set-cookie",
        b"x-unrelated",
        b"strict-transport-security",
    ];
    let values: &[&[u8]] = &[b"1", b"", b"caf\xe9", b"no-cache"];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) as usize % bound.max(1)
    };
    for config in configs {
        let policy = policy(config);
        for path in [None, Some(&b"/r/x"[..]), Some(&b"/api"[..])] {
            let scope = policy.scope_for(path);
            for _ in 0..2_000 {
                let response: Vec<(&[u8], &[u8])> = (0..next(12))
                    .map(|_| (pool[next(pool.len())], values[next(values.len())]))
                    .collect();
                let decision = policy.decide_response(path, response.iter().map(|(n, _)| *n));
                let mut applied: Vec<(&[u8], &[u8])> = response.clone();
                for op in &decision.operations {
                    match op {
                        HeaderOperation::Remove(name) => {
                            applied.retain(|(entry, _)| !name.matches(entry));
                        }
                        HeaderOperation::Set(name, value) => {
                            applied.retain(|(entry, _)| !name.matches(entry));
                            applied.push((name.as_str().as_bytes(), value.as_str().as_bytes()));
                        }
                    }
                }
                let rewrite = scope.rewrite(response.iter().copied());
                assert_eq!(rewrite.headers, applied, "{config} {path:?} {response:?}");
                assert_eq!(rewrite.headers_set, decision.headers_set());
                assert_eq!(rewrite.headers_removed, decision.headers_removed());
                assert_eq!(rewrite.upstream_values_kept, decision.upstream_values_kept);
            }
        }
    }
}
