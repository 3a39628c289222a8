package main

import rego.v1

vs(routes) := {"kind": "VirtualService", "metadata": {"name": "trade", "namespace": "gateway"}, "spec": {"hosts": ["api"], "http": routes}}

match_of(prefix, "") := {"uri": {"prefix": prefix}}

match_of(prefix, method_regex) := {"uri": {"prefix": prefix}, "method": {"regex": method_regex}} if method_regex != ""

route(name, prefix, method_regex, retries) := object.union({"name": name, "match": [match_of(prefix, method_regex)], "route": [{"destination": {"host": "svc"}}]}, retries)

retry(on) := {"retries": {"attempts": 2, "retryOn": on}}

retry_denies(obj) := {m | some m in denies(obj); startswith(m, "SVCGW-RETRY")}

test_write_connect_failure_only_passes if {
	count(retry_denies(vs([route("w", "/api/v1/trade/", "^(POST|PUT|PATCH|DELETE)$", retry("connect-failure,refused-stream"))]))) == 0
}

test_read_5xx_passes if {
	count(retry_denies(vs([route("r", "/api/v1/wallet/", "^(GET|HEAD)$", retry("5xx,connect-failure,refused-stream"))]))) == 0
}

test_write_5xx_denied if {
	some m in retry_denies(vs([route("w", "/api/v1/trade/", "^(POST|PUT|PATCH|DELETE)$", retry("5xx,connect-failure"))]))
	startswith(m, "SVCGW-RETRY-001")
}

test_withdrawal_reset_denied if {
	some m in retry_denies(vs([route("w", "/api/v1/wallet/withdrawals", "^POST$", retry("reset"))]))
	startswith(m, "SVCGW-RETRY-001")
}

test_any_method_5xx_denied if {
	some m in retry_denies(vs([route("any", "/api/v1/trade/", "", retry("gateway-error"))]))
	startswith(m, "SVCGW-RETRY-001")
}

test_read_regex_including_post_denied if {
	some m in retry_denies(vs([route("r", "/api/v1/trade/", "^(GET|HEAD|POST)$", retry("5xx"))]))
	startswith(m, "SVCGW-RETRY-001")
}

test_catch_all_route_is_sensitive if {
	r := object.union({"name": "all", "route": [{"destination": {"host": "svc"}}]}, retry("5xx"))
	some m in retry_denies(vs([r]))
	startswith(m, "SVCGW-RETRY-001")
}

test_zero_attempts_passes if {
	count(retry_denies(vs([route("o", "/api/v1/trade/", "", {"retries": {"attempts": 0}})]))) == 0
}

test_missing_retries_block_denied if {
	some m in retry_denies(vs([route("w", "/api/v1/wallet/", "^POST$", {})]))
	startswith(m, "SVCGW-RETRY-002")
}

test_missing_retry_on_denied if {
	some m in retry_denies(vs([route("w", "/api/v1/trade/", "^POST$", {"retries": {"attempts": 3}})]))
	startswith(m, "SVCGW-RETRY-003")
}

test_risk_route_not_sensitive if {
	count(retry_denies(vs([route("k", "/api/v1/risk/", "^POST$", retry("5xx"))]))) == 0
}
