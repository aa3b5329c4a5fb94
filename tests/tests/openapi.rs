//! The contract: `/openapi.json` describes every route the router serves, and nothing it
//! does not; `/docs` renders it from the hub's own files. (Schemathesis fuzzes the document
//! against a live hub in the test command: `tests/contract/run.sh`.)

use hub_tests::spawn_app;
use serde_json::Value;
use std::collections::BTreeSet;

/// The document's operations as `(METHOD, path)`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for method in item.as_object().expect("a path item is an object").keys() {
            if ["get", "post", "put", "patch", "delete", "head", "options"]
                .contains(&method.as_str())
            {
                all.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    all
}

#[test]
fn every_route_of_the_router_is_in_the_document_and_nothing_else() {
    let doc = serde_json::to_value(hub_api::openapi::document()).expect("the document serializes");
    let documented = operations(&doc);
    let served: BTreeSet<(String, String)> = hub_api::routes::table()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert!(
        served.len() > 50,
        "the route table is the whole router: {served:?}"
    );
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(phantom.is_empty(), "documented but not routed: {phantom:?}");
}

#[test]
fn every_operation_answers_with_a_schema_and_documents_its_errors() {
    let doc = serde_json::to_value(hub_api::openapi::document()).expect("the document serializes");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let responses = op["responses"].as_object().expect("responses");
            let success: Vec<_> = responses.keys().filter(|s| s.starts_with('2')).collect();
            assert!(
                !success.is_empty()
                    || path.as_str() == "/api/ws"
                    || path.starts_with("/api/auth/google"),
                "{method} {path} documents no success"
            );
            assert!(
                responses.contains_key("400") && responses.contains_key("500")
                    || path == "/health"
                    || path == "/ready"
                    || path == "/openapi.json"
                    || path == "/docs"
                    || path == "/metrics"
                    || path == "/api/auth/options"
                    || path == "/api/payments/packages",
                "{method} {path} documents no errors"
            );
        }
    }
    // Every reference resolves.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().expect("a name");
        assert!(
            schemas.contains_key(name),
            "a $ref to a missing schema: {name}"
        );
    }
}

#[tokio::test]
async fn the_hub_serves_the_document_and_its_reference_page() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.expect("JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Smart AI Hub");
    let chat = &doc["paths"]["/v1/chat/completions"]["post"];
    assert_eq!(
        chat["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ChatCompletionRequest"
    );
    assert!(chat["responses"]["200"]["content"]["text/event-stream"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let page = app.get("/docs", None).await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/html"));
    let html = page.text().await.expect("text");
    assert!(
        html.contains("fetch(\"/openapi.json\")"),
        "the page renders the live document"
    );
    assert!(
        !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    app.stop().await;
}
