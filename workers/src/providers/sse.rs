//! A server-sent events parser that takes the body in whatever chunks the network delivers.
//!
//! It follows the WHATWG rules that upstream LLM APIs rely on: lines end with `\n`, `\r\n` or
//! `\r` (a line may be split anywhere across chunks, even inside a UTF-8 character or between
//! `\r` and `\n`); a blank line dispatches the event; `:` starts a comment; `data` lines of one
//! event are joined with `\n`; one space after the colon is dropped; unknown fields are
//! ignored. A body that ends without a final blank line still dispatches its last event.

/// Longest line accepted, in bytes: an upstream that sends more without a line break is broken
/// (a chunk of an LLM stream is a few hundred bytes).
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (Anthropic names every event; OpenAI names none).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental parser: feed it chunks with [`SseParser::push`], then call
/// [`SseParser::finish`] at the end of the body.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    /// The event being assembled.
    event: Option<String>,
    data: Option<String>,
}

/// A line longer than [`LINE_BYTES_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line is longer than {LINE_BYTES_MAX} bytes")]
pub struct LineTooLong;

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Parses `chunk`, returning the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        let mut rest = chunk;
        // An empty chunk (a frame with no data) says nothing about a pending `\r\n`.
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            if self.line.len() > LINE_BYTES_MAX {
                return Err(LineTooLong);
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_done(&line) {
                events.push(event);
            }
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > LINE_BYTES_MAX {
            return Err(LineTooLong);
        }
        Ok(events)
    }

    /// The end of the body: the last line and event, even without a terminating blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.line);
        let from_line = if line.is_empty() {
            None
        } else {
            self.line_done(&line)
        };
        from_line.or_else(|| self.dispatch())
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let data = self.data.take()?;
        Some(SseEvent { event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.push(chunk).unwrap_or_default());
        }
        events.extend(parser.finish());
        events
    }

    fn data(text: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: text.into(),
        }
    }

    #[test]
    fn events_comments_crlf_and_multiline_data() {
        let body = b": keep-alive\r\n\r\nevent: ping\r\ndata: {}\r\n\r\ndata: a\ndata:b\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse_all(&[body]),
            vec![
                SseEvent {
                    event: Some("ping".into()),
                    data: "{}".into()
                },
                data("a\nb"),
                data("[DONE]"),
            ]
        );
    }

    #[test]
    fn a_body_that_ends_without_a_blank_line_still_dispatches_its_last_event() {
        assert_eq!(parse_all(&[b"data: [DONE]"]), vec![data("[DONE]")]);
        assert_eq!(parse_all(&[b"data: x\n"]), vec![data("x")]);
    }

    #[test]
    fn lone_carriage_returns_end_lines() {
        assert_eq!(
            parse_all(&[b"data: x\r\rdata: y\r\r"]),
            vec![data("x"), data("y")]
        );
    }

    #[test]
    fn a_cr_lf_split_across_chunks_is_one_line_end() {
        assert_eq!(
            parse_all(&[b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n"]),
            vec![data("x"), data("y")]
        );
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_keeps_them_one_line_end() {
        // Found by the proptest below: the empty chunk used to forget the `\r`, so the `\n`
        // after it ended a blank line, which dispatched nothing and dropped `event: a`.
        assert_eq!(
            parse_all(&[b"event: a\r", b"", b"\ndata: x\r\n\r\n"]),
            vec![SseEvent {
                event: Some("a".into()),
                data: "x".into()
            }]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::new();
        let chunk = vec![b'a'; LINE_BYTES_MAX / 2 + 1];
        assert!(parser.push(&chunk).is_ok());
        assert_eq!(parser.push(&chunk), Err(LineTooLong));
    }

    proptest! {
        #[test]
        fn any_split_of_a_body_parses_the_same(cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let body = "event: a\r\ndata: {\"text\":\"héllo ✓\"}\r\n\r\n: comment\n\ndata: line one\ndata: line two\n\ndata: [DONE]\n\n".as_bytes();
            let whole = parse_all(&[body]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&body[start..cut]);
                start = cut;
            }
            chunks.push(&body[start..]);
            prop_assert_eq!(parse_all(&chunks), whole);
        }
    }
}
