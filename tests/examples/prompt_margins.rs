//! What the hub loses on prompts that an Anthropic provider counts as more tokens than the
//! hub's own tokenizer (`o200k`), with and without the prompt margin (issue 14, finding 11;
//! docs/benchmarks.md, "Prompt margins").
//!
//! ```text
//! cargo run -p hub-tests --example prompt_margins
//! ```
//!
//! Each prompt goes through the real router and Anthropic provider to the fake Anthropic
//! upstream, which reports its input tokens counted with `p50k_base`, a stand-in for
//! Anthropic's tokenizer (not published for its current models; like it, a smaller
//! vocabulary than `o200k` that needs more tokens for code, digits and non-Latin scripts),
//! with OpenAI's framing (3 tokens a message, 3 to prime the reply) so that only the
//! tokenizers differ. Output is reported at `max_tokens` (the case where the reservation
//! binds: any output below it leaves room for a larger prompt) and, for comparison, at a
//! quarter of it.

use std::sync::OnceLock;

use futures::StreamExt;
use hub_domain::pricing::{Price, TokenUsage};
use hub_tests::fake_anthropic::{Behavior, FakeAnthropic, Reply};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::tokens::count_prompt_tokens;
use hub_workers::{
    ChatMessage, ChatRequest, ModelsSettings, PromptMargins, ProviderKind, ProviderRouter,
    ProviderSettings, StreamEvent,
};
use serde_json::Value;

const MAX_TOKENS: u32 = 256;

/// Claude Sonnet's list price, in micro-credits per million tokens ($3 in, $15 out).
const PRICE: PriceSettings = PriceSettings {
    input_per_million_micros: 3_000_000,
    output_per_million_micros: 15_000_000,
    cached_input_per_million_micros: 300_000,
};

fn stand_in() -> &'static tiktoken_rs::CoreBPE {
    static BPE: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::p50k_base().expect("p50k_base is embedded"))
}

/// The fake's input count: every text of the request with `p50k_base`, framed as OpenAI's.
fn count_like_a_smaller_vocabulary(request: &Value) -> u64 {
    let count = |text: &str| stand_in().encode_ordinary(text).len() as u64;
    let system = request["system"].as_str().map_or(0, |s| 3 + 1 + count(s));
    let messages: u64 = request["messages"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|m| {
                    3 + count(m["role"].as_str().unwrap_or(""))
                        + count(m["content"].as_str().unwrap_or(""))
                })
                .sum()
        })
        .unwrap_or(0);
    system + messages + 3
}

/// The prompts measured: (kind, system prompt, user message).
fn prompts() -> Vec<(&'static str, &'static str, String)> {
    let english = "The printing press changed how ideas moved through Europe. Before Gutenberg, a \
        book was copied by hand, a work of months, and a library of a few hundred volumes was a \
        treasure. Within fifty years of the first printed Bible, presses were running in more \
        than two hundred towns, and millions of books were in circulation. Prices fell, \
        literacy rose, and scholars could compare the same text in distant cities. Summarise \
        the consequences for religion, science and politics in three short paragraphs.";
    let code = r#"Review this Rust function and suggest improvements:
fn parse_config(path: &str) -> Result<HashMap<String, Vec<u32>>, Box<dyn Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') { continue; }
        let (key, values) = line.split_once('=').ok_or(format!("line {}: no '='", i + 1))?;
        let parsed: Result<Vec<u32>, _> = values.split(',').map(|v| v.trim().parse::<u32>()).collect();
        map.insert(key.trim().to_string(), parsed?);
    }
    Ok(map)
}"#;
    let json = r#"Extract the total per customer from this JSON: {"orders":[{"id":"A-1042","customer":"c_81f3","items":[{"sku":"X-77","qty":3,"price":19.99},{"sku":"Q-12","qty":1,"price":249.0}]},{"id":"A-1043","customer":"c_2b9e","items":[{"sku":"X-77","qty":10,"price":18.5}]},{"id":"A-1044","customer":"c_81f3","items":[{"sku":"Z-01","qty":2,"price":7.25},{"sku":"Q-12","qty":2,"price":239.0}]}]}"#;
    let numbers =
        "Quarterly revenue (EUR): 2021 Q1 1,204,551.20; Q2 1,387,009.75; Q3 1,290,114.03; \
        Q4 1,755,870.44. 2022 Q1 1,402,337.91; Q2 1,519,884.10; Q3 1,466,203.58; Q4 2,011,947.66. \
        2023 Q1 1,588,402.17; Q2 1,702,650.33; Q3 1,649,985.01; Q4 2,240,118.92. Compute the \
        year-over-year growth of each quarter and the compound annual growth rate.";
    let german = "Die Druckerpresse veränderte die Verbreitung von Ideen in Europa grundlegend. \
        Vor Gutenberg wurde jedes Buch von Hand abgeschrieben, eine Arbeit von Monaten. \
        Innerhalb von fünfzig Jahren arbeiteten Druckereien in mehr als zweihundert Städten. \
        Fasse die Folgen für Religion, Wissenschaft und Politik in drei kurzen Absätzen zusammen.";
    let russian = "Печатный станок изменил распространение идей в Европе. До Гутенберга каждую \
        книгу переписывали вручную, и на это уходили месяцы. За пятьдесят лет типографии \
        появились более чем в двухстах городах. Кратко опиши последствия для религии, науки и \
        политики в трёх абзацах.";
    let chinese =
        "印刷机改变了思想在欧洲的传播方式。在古腾堡之前，每本书都要手工抄写，需要数月时间。\
        在第一本印刷版圣经问世后的五十年内，两百多个城市都有了印刷厂，数百万册书籍开始流通。\
        请用三个简短的段落总结其对宗教、科学和政治的影响。";
    let japanese = "活版印刷はヨーロッパにおける思想の広がり方を変えました。グーテンベルク以前は、\
        本は一冊ずつ手で書き写され、何か月もかかりました。最初の印刷聖書から五十年のうちに、\
        二百以上の町で印刷所が稼働しました。宗教、科学、政治への影響を三つの短い段落で要約してください。";
    vec![
        ("English prose", "", english.to_owned()),
        (
            "English, long system prompt",
            "You are a careful historian. Cite dates, name people and places, keep each \
             paragraph under eighty words, and say when the evidence is uncertain.",
            english.to_owned(),
        ),
        ("Rust code", "", code.to_owned()),
        ("JSON", "", json.to_owned()),
        ("Numbers", "", numbers.to_owned()),
        ("German", "", german.to_owned()),
        ("Russian", "", russian.to_owned()),
        ("Chinese", "", chinese.to_owned()),
        ("Japanese", "", japanese.to_owned()),
    ]
}

fn reservation(price: &Price, prompt: u64, margin_percent: u32) -> i64 {
    let with_margin = prompt + (prompt * u64::from(margin_percent)).div_ceil(100);
    price
        .max_cost(with_margin, u64::from(MAX_TOKENS))
        .expect("small")
        .micros()
}

fn cost(price: &Price, input: u64, output: u64) -> i64 {
    let usage = TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: 0,
        reasoning_tokens: 0,
    };
    price.cost(&usage).expect("small").micros()
}

#[tokio::main]
async fn main() {
    let fake = FakeAnthropic::start().await;
    fake.count_input_with(count_like_a_smaller_vocabulary);
    fake.set_default(Behavior::reply(Reply::text("An answer.").usage(0, 0)));
    let settings = ModelsSettings {
        models: vec![ModelSettings {
            name: "claude-test".into(),
            price: PRICE,
            max_output_tokens: None,
            context_tokens: None,
            tokenizer: "o200k".into(),
            providers: vec![ProviderSettings {
                kind: ProviderKind::Anthropic,
                base_url: Some(fake.base_url()),
                api_key: Some(fake.api_key().into()),
                upstream_model: None,
                name: None,
                mock_tokens_per_second: None,
            }],
            vision: false,
            image_tokens_max: 1_600,
            tools: true,
            reasoning: false,
            embedding_dimensions: None,
        }],
        ..ModelsSettings::default()
    };
    let router = ProviderRouter::new(&settings).expect("valid settings");
    let price = PRICE.price();
    let margin = PromptMargins::default().anthropic;
    println!(
        "| prompt | hub (o200k) | reported | reported / hub | lost, no margin | lost, {margin} % margin | lost, no margin, output at 1/4 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (mut total_cost, mut lost_before, mut lost_after, mut lost_quarter) = (0, 0, 0, 0);
    for (kind, system, user) in prompts() {
        let mut messages = Vec::new();
        if !system.is_empty() {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &user));
        let estimated = count_prompt_tokens("o200k", &messages);
        let request = ChatRequest {
            model: "claude-test".into(),
            messages,
            max_tokens: MAX_TOKENS,
            ..ChatRequest::default()
        };
        let mut stream = router.open(request).await.expect("the fake answers").stream;
        let mut reported = 0;
        while let Some(event) = stream.next().await {
            if let Ok(StreamEvent::Usage(usage)) = event {
                reported = usage.input_tokens;
            }
        }
        let full = cost(&price, reported, u64::from(MAX_TOKENS));
        let lost = |margin| (full - reservation(&price, estimated, margin)).max(0);
        let quarter = cost(&price, reported, u64::from(MAX_TOKENS / 4));
        let lost_at_quarter = (quarter - reservation(&price, estimated, 0)).max(0);
        total_cost += full;
        lost_before += lost(0);
        lost_after += lost(margin);
        lost_quarter += lost_at_quarter;
        println!(
            "| {kind} | {estimated} | {reported} | {:.2} | {} µc | {} µc | {lost_at_quarter} µc |",
            reported as f64 / estimated as f64,
            lost(0),
            lost(margin),
        );
    }
    println!(
        "\nAt output = max_tokens ({MAX_TOKENS}): owed {total_cost} µc in all; lost {lost_before} µc \
         ({:.2} %) without a margin, {lost_after} µc ({:.2} %) with {margin} %. At a quarter of \
         max_tokens, {lost_quarter} µc lost without a margin.",
        100.0 * lost_before as f64 / total_cost as f64,
        100.0 * lost_after as f64 / total_cost as f64,
    );
}
