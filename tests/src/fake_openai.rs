//! A fake OpenAI chat-completions server for tests, speaking the real wire format, and the
//! scripting it shares with [`crate::fake_anthropic`].
//!
//! It listens on `127.0.0.1:0`, so every test has its own. `POST /v1/chat/completions` checks
//! `Authorization: Bearer <key>` (401 otherwise), records the request, and plays the next
//! [`Behavior`] of its script: the queue first ([`Script::push`]), then the default
//! ([`Script::set_default`]). A [`Reply`] streams `chat.completion.chunk` events ending with
//! `data: [DONE]` when the request asked to stream (with a usage chunk only when the request
//! set `stream_options.include_usage` and the reply has usage), or one `chat.completion`
//! otherwise. A reply with reasoning ([`Reply::reasoning`]) streams it first, as
//! `delta.reasoning_content` chunks (DeepSeek's and vLLM's shape; `message.reasoning_content`
//! in one `chat.completion`). It can wait before its head or its first token, pace its chunks, cut the
//! connection after N chunks, send an error event, ignore `stream: true`, use CRLF, add
//! comments, and fragment events across writes.
//!
//! Counters tell a test what the server saw: requests, their bodies and headers, and how each
//! streamed body ended (completed, cut on purpose, or dropped because the client went away).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Token counts a reply reports, in the hub's terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeUsage {
    /// Every prompt token, cached included.
    pub input: u64,
    pub output: u64,
    /// Prompt tokens read from the cache (part of `input`).
    pub cached: u64,
    /// Prompt tokens written to the cache (part of `input`; Anthropic reports them apart).
    pub cache_creation: u64,
    /// Output tokens spent reasoning (part of `output`; OpenAI reports them apart).
    pub reasoning: u64,
}

/// A tool call a reply makes, after its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeToolCall {
    pub id: String,
    pub name: String,
    /// The arguments' JSON text, in the pieces it is streamed in.
    pub arguments: Vec<String>,
}

/// A successful answer and how to deliver it.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The content, chunk by chunk.
    pub chunks: Vec<String>,
    /// The reasoning streamed before the content, chunk by chunk (none by default).
    pub reasoning: Vec<String>,
    /// Before each reasoning chunk.
    pub reasoning_delay: Duration,
    /// Reported usage; `None` reports none.
    pub usage: Option<FakeUsage>,
    /// In OpenAI's vocabulary (`stop`, `length`); the Anthropic fake translates.
    pub finish_reason: String,
    /// Before the response head.
    pub header_delay: Duration,
    /// After the head, before the first content chunk.
    pub first_token_delay: Duration,
    /// Between content chunks.
    pub chunk_delay: Duration,
    /// Close the connection (no terminating chunk) after this many content chunks.
    pub cut_after: Option<usize>,
    /// Send an error event after this many content chunks, then end: (type, message).
    pub error_after: Option<(usize, String, String)>,
    /// Answer with one JSON body even when streaming was asked.
    pub non_streamed: bool,
    /// End lines with `\r\n`.
    pub crlf: bool,
    /// Write every event in pieces of a few bytes.
    pub fragmented: bool,
    /// Add `: keep-alive` comments.
    pub comments: bool,
    /// Tool calls made after the text (none by default).
    pub tool_calls: Vec<FakeToolCall>,
}

impl Reply {
    /// `text` streamed word by word (each chunk but the first starts with its space).
    pub fn text(text: &str) -> Self {
        let mut chunks = Vec::new();
        for (i, word) in text.split(' ').enumerate() {
            chunks.push(if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            });
        }
        Reply::chunks(&chunks.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Exactly these chunks.
    pub fn chunks(chunks: &[&str]) -> Self {
        Reply {
            chunks: chunks.iter().map(|c| (*c).to_owned()).collect(),
            reasoning: Vec::new(),
            reasoning_delay: Duration::ZERO,
            tool_calls: Vec::new(),
            usage: None,
            finish_reason: "stop".into(),
            header_delay: Duration::ZERO,
            first_token_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            cut_after: None,
            error_after: None,
            non_streamed: false,
            crlf: false,
            fragmented: false,
            comments: false,
        }
    }

    /// The whole content.
    pub fn full_text(&self) -> String {
        self.chunks.concat()
    }

    /// The whole reasoning.
    pub fn full_reasoning(&self) -> String {
        self.reasoning.concat()
    }

    /// Calls tool `name` (as call `id`) after the text, its arguments streamed in `pieces`;
    /// the finish reason becomes `tool_calls`.
    pub fn tool_call(mut self, id: &str, name: &str, pieces: &[&str]) -> Self {
        self.tool_calls.push(FakeToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments: pieces.iter().map(|p| (*p).to_owned()).collect(),
        });
        self.finish_reason = "tool_calls".to_owned();
        self
    }

    /// Reports `tokens` of the output as reasoning.
    pub fn reasoning_tokens(mut self, tokens: u64) -> Self {
        self.usage.get_or_insert_with(FakeUsage::default).reasoning = tokens;
        self
    }

    /// Streams these reasoning chunks before the content (and puts them in a whole answer).
    pub fn reasoning(mut self, chunks: &[&str]) -> Self {
        self.reasoning = chunks.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// Waits this long before each reasoning chunk.
    pub fn reasoning_delay(mut self, delay: Duration) -> Self {
        self.reasoning_delay = delay;
        self
    }

    pub fn usage(mut self, input: u64, output: u64) -> Self {
        let usage = self.usage.get_or_insert_with(FakeUsage::default);
        usage.input = input;
        usage.output = output;
        self
    }

    pub fn cached(mut self, cached: u64) -> Self {
        self.usage.get_or_insert_with(FakeUsage::default).cached = cached;
        self
    }

    pub fn cache_creation(mut self, tokens: u64) -> Self {
        self.usage
            .get_or_insert_with(FakeUsage::default)
            .cache_creation = tokens;
        self
    }

    pub fn finish(mut self, reason: &str) -> Self {
        self.finish_reason = reason.into();
        self
    }

    pub fn header_delay(mut self, delay: Duration) -> Self {
        self.header_delay = delay;
        self
    }

    pub fn first_token_delay(mut self, delay: Duration) -> Self {
        self.first_token_delay = delay;
        self
    }

    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    pub fn cut_after(mut self, chunks: usize) -> Self {
        self.cut_after = Some(chunks);
        self
    }

    pub fn error_after(mut self, chunks: usize, kind: &str, message: &str) -> Self {
        self.error_after = Some((chunks, kind.into(), message.into()));
        self
    }

    pub fn non_streamed(mut self) -> Self {
        self.non_streamed = true;
        self
    }

    pub fn crlf(mut self) -> Self {
        self.crlf = true;
        self
    }

    pub fn fragmented(mut self) -> Self {
        self.fragmented = true;
        self
    }

    pub fn with_comments(mut self) -> Self {
        self.comments = true;
        self
    }
}

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer (boxed: a reply is much larger than a failure).
    Reply(Box<Reply>),
    /// Fail with this status, error message and extra headers.
    Fail {
        status: u16,
        message: String,
        headers: Vec<(String, String)>,
    },
}

impl Behavior {
    pub fn reply(reply: Reply) -> Self {
        Behavior::Reply(Box::new(reply))
    }

    pub fn status(status: u16) -> Self {
        Behavior::Fail {
            status,
            message: format!("fake failure {status}"),
            headers: Vec::new(),
        }
    }

    pub fn unauthorized() -> Self {
        Behavior::status(401)
    }

    pub fn server_error() -> Self {
        Behavior::status(500)
    }

    /// 429 with `Retry-After: <seconds>` if given.
    pub fn rate_limited(retry_after_seconds: Option<&str>) -> Self {
        Behavior::Fail {
            status: 429,
            message: "Rate limit reached".into(),
            headers: retry_after_seconds
                .map(|s| vec![("retry-after".to_owned(), s.to_owned())])
                .unwrap_or_default(),
        }
    }

    /// 429 with `retry-after-ms` and `Retry-After` (rounded up), as OpenAI sends them.
    pub fn rate_limited_ms(ms: u64) -> Self {
        Behavior::Fail {
            status: 429,
            message: "Rate limit reached".into(),
            headers: vec![
                ("retry-after-ms".to_owned(), ms.to_string()),
                ("retry-after".to_owned(), ms.div_ceil(1000).to_string()),
            ],
        }
    }
}

/// A fake's script and what it saw.
pub struct Script {
    queue: Mutex<VecDeque<Behavior>>,
    default: Mutex<Behavior>,
    requests: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
    headers: Mutex<Vec<HeaderMap>>,
    streams_completed: AtomicUsize,
    streams_cut: AtomicUsize,
    streams_cancelled: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Script {
    pub(crate) fn new(default: Behavior) -> Arc<Script> {
        Arc::new(Script {
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            requests: AtomicUsize::new(0),
            bodies: Mutex::new(Vec::new()),
            headers: Mutex::new(Vec::new()),
            streams_completed: AtomicUsize::new(0),
            streams_cut: AtomicUsize::new(0),
            streams_cancelled: AtomicUsize::new(0),
        })
    }

    /// Plays `behavior` for the next request not yet scripted.
    pub fn push(&self, behavior: Behavior) {
        lock(&self.queue).push_back(behavior);
    }

    /// Plays `behavior` whenever the queue is empty.
    pub fn set_default(&self, behavior: Behavior) {
        *lock(&self.default) = behavior;
    }

    /// Requests received (rejected ones included).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The last request's JSON body.
    pub fn last_body(&self) -> Option<Value> {
        lock(&self.bodies).last().cloned()
    }

    /// Every request's JSON body, in order.
    pub fn bodies(&self) -> Vec<Value> {
        lock(&self.bodies).clone()
    }

    /// The last request's headers.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        lock(&self.headers).last().cloned()
    }

    /// Streamed bodies sent to their end.
    pub fn streams_completed(&self) -> usize {
        self.streams_completed.load(Ordering::SeqCst)
    }

    /// Streamed bodies cut on purpose ([`Reply::cut_after`]).
    pub fn streams_cut(&self) -> usize {
        self.streams_cut.load(Ordering::SeqCst)
    }

    /// Streamed bodies abandoned because the client closed the connection.
    pub fn streams_cancelled(&self) -> usize {
        self.streams_cancelled.load(Ordering::SeqCst)
    }

    /// Records a request and picks its behavior.
    pub(crate) fn receive(&self, headers: &HeaderMap, body: &Bytes) -> (Value, Behavior) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        lock(&self.bodies).push(json.clone());
        lock(&self.headers).push(headers.clone());
        let behavior = lock(&self.queue)
            .pop_front()
            .unwrap_or_else(|| lock(&self.default).clone());
        (json, behavior)
    }
}

/// One step of a streamed body.
pub(crate) enum Step {
    Pause(Duration),
    Send(Vec<u8>),
    /// Fail the body: the server closes the connection without ending the chunked encoding.
    Cut,
}

/// Builds the steps of an event stream: each event is written (in fragments if asked) after
/// its pause.
pub(crate) struct Steps {
    steps: VecDeque<Step>,
    line_end: &'static str,
    fragmented: bool,
}

impl Steps {
    pub(crate) fn new(reply: &Reply) -> Self {
        Steps {
            steps: VecDeque::new(),
            line_end: if reply.crlf { "\r\n" } else { "\n" },
            fragmented: reply.fragmented,
        }
    }

    pub(crate) fn pause(&mut self, delay: Duration) {
        if !delay.is_zero() {
            self.steps.push_back(Step::Pause(delay));
        }
    }

    /// An event with an optional `event:` name and its data.
    pub(crate) fn event(&mut self, name: Option<&str>, data: &str) {
        let end = self.line_end;
        let mut text = String::new();
        if let Some(name) = name {
            text.push_str(&format!("event: {name}{end}"));
        }
        text.push_str(&format!("data: {data}{end}{end}"));
        self.raw(text.into_bytes());
    }

    pub(crate) fn comment(&mut self) {
        let end = self.line_end;
        self.raw(format!(": keep-alive{end}{end}").into_bytes());
    }

    fn raw(&mut self, bytes: Vec<u8>) {
        if self.fragmented {
            for piece in bytes.chunks(3) {
                self.steps.push_back(Step::Send(piece.to_vec()));
            }
        } else {
            self.steps.push_back(Step::Send(bytes));
        }
    }

    /// Cuts the connection, after a moment for what was written to reach the client (the
    /// server discards its unflushed buffer when the body fails).
    pub(crate) fn cut(&mut self) {
        self.steps.push_back(Step::Pause(Duration::from_millis(50)));
        self.steps.push_back(Step::Cut);
    }

    /// The streamed response.
    pub(crate) fn into_response(self, script: Arc<Script>) -> Response {
        let tracker = Tracker {
            script,
            finished: false,
        };
        let body = futures::stream::unfold(
            (self.steps, tracker),
            |(mut steps, mut tracker)| async move {
                loop {
                    match steps.pop_front() {
                        None => {
                            tracker.finished = true;
                            tracker
                                .script
                                .streams_completed
                                .fetch_add(1, Ordering::SeqCst);
                            return None;
                        }
                        Some(Step::Pause(delay)) => tokio::time::sleep(delay).await,
                        Some(Step::Send(bytes)) => {
                            return Some((Ok(Bytes::from(bytes)), (steps, tracker)))
                        }
                        Some(Step::Cut) => {
                            tracker.finished = true;
                            tracker.script.streams_cut.fetch_add(1, Ordering::SeqCst);
                            steps.clear();
                            let cut = std::io::Error::other("the fake cuts the stream");
                            return Some((Err(cut), (steps, tracker)));
                        }
                    }
                }
            },
        );
        let mut response = Response::new(Body::from_stream(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// Counts a streamed body abandoned before its end.
struct Tracker {
    script: Arc<Script>,
    finished: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.finished {
            self.script.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A JSON response.
pub(crate) fn json_response(status: u16, body: &Value, headers: &[(String, String)]) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    map.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    response
}

/// Serves `app` on `127.0.0.1:0`.
pub(crate) async fn serve(app: Router) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a fake upstream");
    let address = listener.local_addr().expect("the fake's address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}"), task)
}

/// A fake OpenAI server. Derefs to its [`Script`].
pub struct FakeOpenAi {
    address: String,
    api_key: String,
    script: Arc<Script>,
    task: JoinHandle<()>,
}

/// What the fake needs in its handler.
#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    api_key: String,
}

impl FakeOpenAi {
    /// A server expecting the key `sk-fake-openai`, answering "Hello from the fake." with
    /// usage (10 in, 5 out) by default.
    pub async fn start() -> FakeOpenAi {
        FakeOpenAi::start_with_key("sk-fake-openai").await
    }

    pub async fn start_with_key(api_key: &str) -> FakeOpenAi {
        let script = Script::new(Behavior::reply(
            Reply::text("Hello from the fake.").usage(10, 5),
        ));
        let shared = Shared {
            script: Arc::clone(&script),
            api_key: api_key.to_owned(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared);
        let (address, task) = serve(app).await;
        FakeOpenAi {
            address,
            api_key: api_key.to_owned(),
            script,
            task,
        }
    }

    /// The base URL a provider is configured with: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.address)
    }

    /// The key it accepts.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }
}

impl std::ops::Deref for FakeOpenAi {
    type Target = Script;
    fn deref(&self) -> &Script {
        &self.script
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn openai_error(status: u16, message: &str, headers: &[(String, String)]) -> Response {
    let kind = match status {
        401 => "invalid_request_error",
        429 => "requests",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        headers,
    )
}

async fn chat_completions(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, behavior) = shared.script.receive(&headers, &body);
    let expected = format!("Bearer {}", shared.api_key);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        return openai_error(
            401,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            &[],
        );
    }
    let reply = match behavior {
        Behavior::Fail {
            status,
            message,
            headers,
        } => return openai_error(status, &message, &headers),
        Behavior::Reply(reply) => *reply,
    };
    tokio::time::sleep(reply.header_delay).await;
    let model = request["model"].as_str().unwrap_or("unknown").to_owned();
    let streamed = request["stream"].as_bool().unwrap_or(false) && !reply.non_streamed;
    if !streamed {
        tokio::time::sleep(reply.first_token_delay).await;
        let mut answer = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply.full_text()},
                "finish_reason": reply.finish_reason,
            }],
        });
        if !reply.reasoning.is_empty() {
            answer["choices"][0]["message"]["reasoning_content"] = json!(reply.full_reasoning());
        }
        if !reply.tool_calls.is_empty() {
            let calls: Vec<Value> = reply
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.concat()}})
                })
                .collect();
            answer["choices"][0]["message"]["tool_calls"] = json!(calls);
        }
        if let Some(usage) = reply.usage {
            answer["usage"] = openai_usage(usage);
        }
        return json_response(200, &answer, &[]);
    }
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    };
    let mut steps = Steps::new(&reply);
    if reply.comments {
        steps.comment();
    }
    steps.event(
        None,
        &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    );
    for thought in &reply.reasoning {
        steps.pause(reply.reasoning_delay);
        steps.event(
            None,
            &chunk(
                json!({"content": null, "reasoning_content": thought}),
                Value::Null,
            ),
        );
    }
    for (index, text) in reply.chunks.iter().enumerate() {
        if reply.cut_after == Some(index) {
            steps.cut();
            return steps.into_response(Arc::clone(&shared.script));
        }
        if let Some((_, kind, message)) = reply.error_after.as_ref().filter(|e| e.0 == index) {
            let error = json!({"error": {"message": message, "type": kind, "code": null}});
            steps.event(None, &error.to_string());
            return steps.into_response(Arc::clone(&shared.script));
        }
        steps.pause(if index == 0 {
            reply.first_token_delay
        } else {
            reply.chunk_delay
        });
        steps.event(None, &chunk(json!({"content": text}), Value::Null));
        if reply.comments && index == 0 {
            steps.comment();
        }
    }
    if reply.cut_after.is_some_and(|n| n >= reply.chunks.len()) {
        steps.cut();
        return steps.into_response(Arc::clone(&shared.script));
    }
    for (index, call) in reply.tool_calls.iter().enumerate() {
        let first = json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": ""}}]});
        steps.event(None, &chunk(first, Value::Null));
        for piece in &call.arguments {
            let more = json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
            steps.event(None, &chunk(more, Value::Null));
        }
    }
    steps.event(None, &chunk(json!({}), json!(reply.finish_reason)));
    if let (true, Some(usage)) = (include_usage, reply.usage) {
        let usage_chunk = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [],
            "usage": openai_usage(usage),
        });
        steps.event(None, &usage_chunk.to_string());
    }
    steps.event(None, "[DONE]");
    steps.into_response(Arc::clone(&shared.script))
}

/// `POST /v1/embeddings`: for input `i` of `n` characters, the vector `[n, i, 0.5, ...]` of
/// `dimensions` (default 8) numbers; the data listed last input first (clients order by
/// `index`); `usage.prompt_tokens` is the reply's input count. A failing behavior fails.
async fn embeddings(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, behavior) = shared.script.receive(&headers, &body);
    let expected = format!("Bearer {}", shared.api_key);
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return openai_error(401, "Incorrect API key provided.", &[]);
    }
    let reply = match behavior {
        Behavior::Fail {
            status,
            message,
            headers,
        } => return openai_error(status, &message, &headers),
        Behavior::Reply(reply) => *reply,
    };
    let inputs: Vec<String> = match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(texts) => texts
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => return openai_error(400, "input must be a string or strings", &[]),
    };
    let dimensions = request["dimensions"].as_u64().unwrap_or(8) as usize;
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let mut vector = vec![0.5f32; dimensions.max(2)];
            vector[0] = text.chars().count() as f32;
            vector[1] = index as f32;
            vector.truncate(dimensions);
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    data.reverse();
    let tokens = reply.usage.map_or(0, |u| u.input);
    json_response(
        200,
        &json!({"object": "list", "data": data, "model": request["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        &[],
    )
}

fn openai_usage(usage: FakeUsage) -> Value {
    json!({
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    })
}
