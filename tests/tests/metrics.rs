//! `GET /metrics`: Prometheus text that a strict reader accepts, whose counters move by
//! exactly the requests a test made, on the API's port and on the listener of a role
//! without one.
//!
//! The recorder is one per process (the `metrics` facade's), shared by every app a test
//! binary starts: the tests here take turns ([`TURN`]) so that one's counts are not
//! another's.

use hub_domain::Role;
use hub_server::Roles;
use hub_tests::fake_openai::{Behavior, FakeOpenAi};
use hub_tests::{eventually, spawn_app_with, TestApp};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::{ProviderKind, ProviderSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// One test at a time touches the process's counters.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------
// A strict reader of the Prometheus text format (version 0.0.4)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name → its type.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("not a value: {text:?}")),
    }
}

/// `{name="value",...}` from the start of `text`; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text
        .strip_prefix('{')
        .ok_or_else(|| "labels must open with {".to_string())?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("a raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels must be separated by commas".into());
        }
    }
}

/// The family a sample belongs to: its own name, or a histogram's or summary's name
/// before `_bucket`, `_sum` or `_count`.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        types
            .get(base)
            .filter(|kind| *kind == "histogram" || (*kind == "summary" && *suffix != "_bucket"))
            .map(|_| base)
    })
}

fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut seen: HashMap<(String, BTreeMap<String, String>), ()> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    if !is_metric_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if out
                        .types
                        .insert((*name).to_string(), (*kind).to_string())
                        .is_some()
                    {
                        return Err(at("a second TYPE for one family".into()));
                    }
                }
                ["HELP", name, ..] if is_metric_name(name) => {}
                ["HELP", ..] => return Err(at("bad HELP".into())),
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("the value must follow one space".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| at("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let Some(base) = family(name, &out.types) else {
            return Err(at("a sample before its family's TYPE".into()));
        };
        if out.types[base] == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a counter below zero".into()));
        }
        if seen
            .insert((name.to_string(), labels.clone()), ())
            .is_some()
        {
            return Err(at("the same series twice".into()));
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&out)?;
    Ok(out)
}

/// Every histogram series: buckets rising to `+Inf`, which equals its `_count`.
fn check_histograms(out: &Exposition) -> Result<(), String> {
    for (name, kind) in &out.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{name}_bucket");
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in out.samples.iter().filter(|s| s.name == bucket) {
            let le = parse_value(s.labels.get("le").ok_or("a bucket without le")?)?;
            let mut labels = s.labels.clone();
            labels.remove("le");
            series.entry(labels).or_default().push((le, s.value));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !buckets.windows(2).all(|w| w[0].1 <= w[1].1) {
                return Err(format!("{name}{labels:?}: buckets fall"));
            }
            let (le, top) = *buckets.last().ok_or("no bucket")?;
            if le != f64::INFINITY {
                return Err(format!("{name}{labels:?}: no +Inf bucket"));
            }
            let count = out
                .samples
                .iter()
                .find(|s| s.name == format!("{name}_count") && s.labels == labels)
                .ok_or_else(|| format!("{name}{labels:?}: no _count"))?;
            if count.value != top {
                return Err(format!("{name}{labels:?}: +Inf bucket is not the count"));
            }
        }
    }
    Ok(())
}

impl Exposition {
    /// The sum of `name`'s samples that carry every label of `with` (0 when none does).
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                with.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str, with: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

#[test]
fn the_reader_refuses_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\n\
                # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n";
    let parsed = parse(good).expect("valid text");
    assert_eq!(parsed.sum("a_total", &[("y", "q\"")]), 3.0);
    for bad in [
        "a_total 1\n",                                                      // no TYPE
        "# TYPE a_total counter\na_total{x=1} 1\n",                         // unquoted
        "# TYPE a_total counter\na_total -1\n",                             // counter below zero
        "# TYPE a_total counter\na_total 1 2 3\n",                          // trailing
        "# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"1\"} 2\n", // twice
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",         // +Inf ≠ count
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // falls
        "# TYPE a_total countr\na_total 1\n",                               // no such type
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The dashboard, the documentation and the code name the same metrics
// ---------------------------------------------------------------------------------------

/// Every `aihub_...` name in `text`; with `quoted`, only those inside a string literal.
fn metric_names(text: &str, quoted: bool) -> BTreeSet<String> {
    text.match_indices("aihub_")
        .filter(|(at, _)| !quoted || text[..*at].ends_with('"'))
        .filter(|(at, _)| {
            // The start of a name, not the middle of another word.
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_exactly_the_documented_metrics_the_code_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
    };
    let documented: BTreeSet<String> = read("docs/operations.md")
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("aihub_"))
        .map(str::to_owned)
        .collect();
    assert!(documented.len() >= 20, "{documented:?}");

    let dashboard: Value = serde_json::from_str(&read("docs/grafana/smart-ai-hub.json"))
        .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    let queried: BTreeSet<String> = metric_names(&queries.join("\n"), false)
        .into_iter()
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| documented.contains(*b)))
                .map_or(name.clone(), str::to_owned)
        })
        .collect();
    assert_eq!(
        queried, documented,
        "the dashboard against docs/operations.md"
    );

    let mut source = String::new();
    for file in [
        "api/src/metrics.rs",
        "app/src/metrics.rs",
        "commands/src/metrics.rs",
        "workers/src/metrics.rs",
    ] {
        source.push_str(&read(file));
    }
    assert_eq!(
        metric_names(&source, true),
        documented,
        "the code against docs/operations.md"
    );
}

// ---------------------------------------------------------------------------------------
// Over the real app
// ---------------------------------------------------------------------------------------

async fn scrape(base: &str) -> Exposition {
    let response = reqwest::get(format!("{base}/metrics")).await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("text/plain"), "{kind}");
    let text = response.text().await.expect("body");
    parse(&text).unwrap_or_else(|err| panic!("not Prometheus text: {err}"))
}

async fn chat(app: &TestApp, token: &str, model: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32}))
        .send()
        .await
        .expect("sent")
}

const CHAT: [(&str, &str); 2] = [("method", "POST"), ("route", "/v1/chat/completions")];
const MOCK: [(&str, &str); 2] = [("model", "mock-1"), ("provider", "mock")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_move_by_exactly_the_requests_the_test_made() {
    let _turn = TURN.lock().await;
    let app = spawn_app_with(Roles::ALL, |s| s.metrics.sample_interval_ms = 100).await;
    let user = Uuid::new_v4();
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let token = app.token(user, Role::User);
    let granted = 10_000_000;
    assert_eq!(
        app.grant(&admin, user, granted, &format!("fund-{user}"))
            .await
            .status(),
        StatusCode::CREATED
    );
    let start = app.settled_balance(&token).await;
    let before = scrape(&app.address).await;

    const CHATS: usize = 5;
    let (mut input, mut output) = (0.0, 0.0);
    for _ in 0..CHATS {
        let answer = chat(&app, &token, "mock-1").await;
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.expect("json");
        input += body["usage"]["prompt_tokens"]
            .as_f64()
            .expect("prompt tokens");
        output += body["usage"]["completion_tokens"]
            .as_f64()
            .expect("completion tokens");
    }
    // Two refusals: a model that does not exist is no inference request.
    for _ in 0..2 {
        let answer = chat(&app, &token, "no-such-model").await;
        assert!(answer.status().is_client_error(), "{}", answer.status());
    }
    // A path with an id is counted under its route's template, not the id.
    let id = Uuid::new_v4();
    let revoked = app
        .client
        .delete(app.url(&format!("/api/keys/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert!(revoked.status().is_client_error(), "{}", revoked.status());

    let end = app.settled_balance(&token).await;
    let spent = start["balance_micros"].as_f64().expect("balance")
        - end["balance_micros"].as_f64().expect("balance");
    assert!(spent > 0.0);
    let after = scrape(&app.address).await;
    let delta = |name: &str, with: &[(&str, &str)]| after.sum(name, with) - before.sum(name, with);
    let n = CHATS as f64;

    let ok = [CHAT[0], CHAT[1], ("status", "2xx")];
    let refused = [CHAT[0], CHAT[1], ("status", "4xx")];
    assert_eq!(delta("aihub_http_requests_total", &ok), n);
    assert_eq!(delta("aihub_http_requests_total", &refused), 2.0);
    assert_eq!(delta("aihub_http_request_duration_seconds_count", &ok), n);
    assert_eq!(
        delta(
            "aihub_http_requests_total",
            &[("method", "DELETE"), ("route", "/api/keys/{id}")]
        ),
        1.0
    );
    assert!(
        !after.samples.iter().any(|s| s
            .labels
            .get("route")
            .is_some_and(|r| r.contains(&id.to_string()))),
        "a raw path became a label"
    );

    let completed = [MOCK[0], MOCK[1], ("outcome", "completed")];
    assert_eq!(delta("aihub_inference_requests_total", &completed), n);
    assert_eq!(
        delta(
            "aihub_inference_requests_total",
            &[("model", "no-such-model")]
        ),
        0.0
    );
    assert_eq!(delta("aihub_inference_input_tokens_total", &MOCK), input);
    assert_eq!(delta("aihub_inference_output_tokens_total", &MOCK), output);
    assert_eq!(delta("aihub_inference_cost_micros_total", &MOCK), spent);
    assert_eq!(
        delta("aihub_inference_time_to_first_token_seconds_count", &MOCK),
        n
    );
    assert_eq!(delta("aihub_inference_duration_seconds_count", &MOCK), n);
    assert_eq!(delta("aihub_inference_upstream_errors_total", &MOCK), 0.0);

    let event = |e: &'static str| [("event", e)];
    assert_eq!(delta("aihub_credit_events_total", &event("reserved")), n);
    assert_eq!(delta("aihub_credit_events_total", &event("settled")), n);
    assert_eq!(delta("aihub_credit_micros_total", &event("settled")), spent);
    assert_eq!(delta("aihub_credit_events_total", &event("expired")), 0.0);
    // Everything reserved was charged or freed: nothing is held any more.
    assert_eq!(end["reserved_micros"], 0);
    assert!(delta("aihub_credit_micros_total", &event("reserved")) >= spent);

    // The gauges: sampled, every projection named.
    let gauges = eventually(Duration::from_secs(10), "the gauges", || async {
        let now = scrape(&app.address).await;
        (now.has("aihub_projection_lag_events", &[("projection", "balances")])
            && now.has("aihub_outbox_depth", &[])
            && now.has("aihub_postgres_pool_max", &[]))
        .then_some(now)
    })
    .await;
    assert_eq!(gauges.types["aihub_projection_lag_events"], "gauge");
    assert_eq!(gauges.sum("aihub_nats_connected", &[]), 1.0);
    assert_eq!(
        gauges.sum("aihub_postgres_pool_max", &[]),
        f64::from(app.settings.database.max_connections)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_http_answers_on_its_metrics_listener() {
    let _turn = TURN.lock().await;
    let worker = Roles {
        worker: true,
        settler: true,
        ..Roles::NONE
    };
    let app = spawn_app_with(worker, |s| {
        s.metrics.listen = "127.0.0.1:0".into();
        s.metrics.sample_interval_ms = 100;
    })
    .await;
    let base = app.metrics_address.clone().expect("a metrics listener");
    // The worker serves no API: its only port is the metrics listener.
    assert!(app.address.ends_with(":0"), "{}", app.address);
    let seen = eventually(Duration::from_secs(10), "the sampled gauges", || async {
        let now = scrape(&base).await;
        now.has("aihub_postgres_pool_max", &[]).then_some(now)
    })
    .await;
    assert_eq!(seen.types["aihub_nats_connected"], "gauge");
    assert_eq!(seen.sum("aihub_nats_connected", &[]), 1.0);
    // Only /metrics answers there.
    let other = reqwest::get(format!("{base}/api/credits/balance"))
        .await
        .expect("sent");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_port_can_keep_metrics_to_the_listener() {
    let _turn = TURN.lock().await;
    let app = spawn_app_with(Roles::ALL, |s| {
        s.metrics.api_route = false;
        s.metrics.listen = "127.0.0.1:0".into();
    })
    .await;
    let on_api = app.get("/metrics", None).await;
    assert_eq!(on_api.status(), StatusCode::NOT_FOUND);
    let base = app.metrics_address.clone().expect("a metrics listener");
    // The API's requests are still counted, and read on the listener.
    assert_eq!(app.get("/health", None).await.status(), StatusCode::OK);
    let seen = scrape(&base).await;
    assert!(
        seen.sum(
            "aihub_http_requests_total",
            &[("route", "/health"), ("status", "2xx")]
        ) >= 1.0
    );
    app.stop().await;
}

/// A model whose first provider always fails (500) and whose second is the mock.
fn flaky_models(failing: &FakeOpenAi) -> hub_workers::ModelsSettings {
    let upstream = ProviderSettings {
        kind: ProviderKind::Openai,
        base_url: Some(failing.base_url()),
        api_key: Some(failing.api_key().into()),
        upstream_model: Some("gpt-4o-mini".into()),
        name: Some("first".into()),
        mock_tokens_per_second: None,
    };
    let mock = ProviderSettings {
        kind: ProviderKind::Mock,
        base_url: None,
        api_key: None,
        upstream_model: None,
        name: Some("second".into()),
        mock_tokens_per_second: None,
    };
    let model = |name: &str, providers: Vec<ProviderSettings>| ModelSettings {
        name: name.into(),
        price: PriceSettings {
            input_per_million_micros: 3_000_000,
            output_per_million_micros: 15_000_000,
            cached_input_per_million_micros: 300_000,
        },
        max_output_tokens: Some(256),
        context_tokens: None,
        tokenizer: "o200k".into(),
        providers,
        vision: false,
        image_tokens_max: 1_600,
        tools: false,
        reasoning: false,
        embedding_dimensions: None,
    };
    let mut settings = hub_workers::ModelsSettings {
        retries_max: 1,
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        cooldown_after_failures: 2,
        cooldown_ms: 60_000,
        ..hub_workers::ModelsSettings::default()
    };
    settings
        .models
        .push(model("flaky", vec![upstream.clone(), mock]));
    settings.models.push(model("down", vec![upstream]));
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_fallbacks_cooldowns_and_failures_are_counted_by_model_and_provider() {
    let _turn = TURN.lock().await;
    let failing = FakeOpenAi::start().await;
    failing.set_default(Behavior::server_error());
    let models = flaky_models(&failing);
    let app = spawn_app_with(Roles::ALL, move |s| s.models = models).await;
    let user = Uuid::new_v4();
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let token = app.token(user, Role::User);
    assert_eq!(
        app.grant(&admin, user, 10_000_000, &format!("fund-{user}"))
            .await
            .status(),
        StatusCode::CREATED
    );
    let before = scrape(&app.address).await;

    // The first chat: two calls to `first` (a retry), which then cools down; `second`
    // answers. The second chat skips `first`, cooling, and goes to `second` at once.
    for _ in 0..2 {
        assert_eq!(chat(&app, &token, "flaky").await.status(), StatusCode::OK);
    }
    assert_eq!(failing.requests(), 2);
    // `down` has only the failing provider: no answer, the reservation released.
    let refused = chat(&app, &token, "down").await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);

    let after = scrape(&app.address).await;
    let delta = |name: &str, with: &[(&str, &str)]| after.sum(name, with) - before.sum(name, with);
    let first = [("model", "flaky"), ("provider", "first")];
    let second = [("model", "flaky"), ("provider", "second")];
    assert_eq!(
        delta(
            "aihub_inference_upstream_errors_total",
            &[first[0], first[1], ("code", "upstream_error")]
        ),
        2.0
    );
    assert_eq!(delta("aihub_inference_cooldowns_total", &first), 1.0);
    assert_eq!(delta("aihub_inference_fallbacks_total", &second), 2.0);
    assert_eq!(delta("aihub_inference_fallbacks_total", &first), 0.0);
    assert_eq!(
        delta(
            "aihub_inference_requests_total",
            &[second[0], second[1], ("outcome", "completed")]
        ),
        2.0
    );
    let down = [
        ("model", "down"),
        ("provider", "none"),
        ("outcome", "failed"),
    ];
    assert_eq!(delta("aihub_inference_requests_total", &down), 1.0);
    assert_eq!(
        delta(
            "aihub_inference_failures_total",
            &[("model", "down"), ("code", "upstream_error")]
        ),
        1.0
    );
    assert_eq!(
        delta("aihub_credit_events_total", &[("event", "released")]),
        1.0
    );
    app.stop().await;
}
