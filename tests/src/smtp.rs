//! A small real SMTP server for tests: it speaks enough RFC 5321 for lettre (greeting, EHLO or
//! HELO, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT), accepts every message, and queues each
//! one, in the order their DATA ended, for [`SmtpServer::next_message`].
//!
//! ```no_run
//! # async fn demo() {
//! use hub_tests::smtp::SmtpServer;
//! use std::time::Duration;
//! let server = SmtpServer::start().await;
//! // ... configure the app's mailer with `server.host()` and `server.port()`, act ...
//! let mail = server.next_message(Duration::from_secs(10)).await;
//! let code = mail.find_code().expect("a 6-digit code");
//! # }
//! ```

use base64::Engine;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::task::JoinHandle;

/// Longest command or text line accepted, in bytes. RFC 5321 allows 1,000 for text lines;
/// more room costs nothing and keeps a sloppy client from failing for the wrong reason.
const LINE_BYTES_MAX: usize = 64 * 1024;
/// Largest message accepted, in bytes: far above any mail the app sends.
const MESSAGE_BYTES_MAX: usize = 10 * 1024 * 1024;
/// Messages received but not yet taken by the test; a session waits when it is full.
const QUEUE_MESSAGES_MAX: usize = 1024;
/// Sessions served at once; more wait in the listener's backlog.
const CONNECTIONS_MAX: usize = 256;
/// A session silent for this long is dropped, so a stuck client cannot hold a slot forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), without the angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The message as sent after `DATA`: headers, blank line, body; CRLF line ends,
    /// dot-unstuffed, without the final `.` line.
    pub data: String,
}

/// A running SMTP server on 127.0.0.1 and a free port; it stops when dropped.
pub struct SmtpServer {
    address: SocketAddr,
    messages: Mutex<mpsc::Receiver<ReceivedMail>>,
    accept: JoinHandle<()>,
}

impl SmtpServer {
    /// Bind 127.0.0.1:0 and start accepting connections.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test SMTP server to 127.0.0.1:0");
        let address = listener
            .local_addr()
            .expect("the test SMTP server's address");
        let (sender, receiver) = mpsc::channel(QUEUE_MESSAGES_MAX);
        let accept = tokio::spawn(accept_loop(listener, sender));
        SmtpServer {
            address,
            messages: Mutex::new(receiver),
            accept,
        }
    }

    pub fn host(&self) -> String {
        self.address.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The next message received, oldest first; panics if none arrives `within`.
    pub async fn next_message(&self, within: Duration) -> ReceivedMail {
        let mut messages = self.messages.lock().await;
        match tokio::time::timeout(within, messages.recv()).await {
            Ok(Some(mail)) => mail,
            Ok(None) => panic!("the test SMTP server on port {} stopped", self.port()),
            Err(_) => panic!(
                "no email reached the test SMTP server on port {} within {within:?}",
                self.port()
            ),
        }
    }

    /// A message already received, if any, without waiting.
    pub async fn try_next_message(&self) -> Option<ReceivedMail> {
        self.messages.lock().await.try_recv().ok()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        // Sessions already running end with their clients; no new ones start.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, messages: mpsc::Sender<ReceivedMail>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let messages = messages.clone();
        tokio::spawn(async move {
            let _ = serve(stream, messages).await;
            drop(slot);
        });
    }
}

/// One SMTP transaction in progress.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    to: Vec<String>,
}

async fn serve(stream: TcpStream, messages: mpsc::Sender<ReceivedMail>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    reply(&mut write, "220 localhost ESMTP hub-tests ready\r\n").await?;
    let mut transaction = Transaction::default();
    loop {
        let Some(line) = read_line(&mut read).await? else {
            return Ok(());
        };
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        let (verb, argument) = match line.split_once(' ') {
            Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" => {
                transaction = Transaction::default();
                reply(&mut write, "250-localhost greets you\r\n250 8BITMIME\r\n").await?;
            }
            "HELO" => {
                transaction = Transaction::default();
                reply(&mut write, "250 localhost\r\n").await?;
            }
            "MAIL" => match path_argument(argument, "FROM:") {
                Some(from) => {
                    transaction = Transaction {
                        from: Some(from),
                        to: Vec::new(),
                    };
                    reply(&mut write, "250 2.1.0 OK\r\n").await?;
                }
                None => reply(&mut write, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n").await?,
            },
            "RCPT" => match (path_argument(argument, "TO:"), &transaction.from) {
                (_, None) => reply(&mut write, "503 5.5.1 MAIL first\r\n").await?,
                (Some(to), Some(_)) => {
                    transaction.to.push(to);
                    reply(&mut write, "250 2.1.5 OK\r\n").await?;
                }
                (None, Some(_)) => {
                    reply(&mut write, "501 5.5.4 Syntax: RCPT TO:<address>\r\n").await?;
                }
            },
            "DATA" => {
                let Some(from) = transaction.from.take() else {
                    reply(&mut write, "503 5.5.1 MAIL first\r\n").await?;
                    continue;
                };
                if transaction.to.is_empty() {
                    transaction.from = Some(from);
                    reply(&mut write, "503 5.5.1 RCPT first\r\n").await?;
                    continue;
                }
                reply(&mut write, "354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let Some(data) = read_data(&mut read).await? else {
                    return Ok(());
                };
                let to = std::mem::take(&mut transaction.to);
                let Some(data) = data else {
                    reply(&mut write, "552 5.3.4 Message too big\r\n").await?;
                    continue;
                };
                let mail = ReceivedMail {
                    from,
                    to,
                    data: String::from_utf8_lossy(&data).into_owned(),
                };
                // Queued before the 250, so a test that saw the send succeed finds it.
                if messages.send(mail).await.is_err() {
                    reply(&mut write, "451 4.3.0 The test is gone\r\n").await?;
                    continue;
                }
                reply(&mut write, "250 2.0.0 OK queued\r\n").await?;
            }
            "RSET" => {
                transaction = Transaction::default();
                reply(&mut write, "250 2.0.0 OK\r\n").await?;
            }
            "NOOP" => reply(&mut write, "250 2.0.0 OK\r\n").await?,
            "QUIT" => {
                reply(&mut write, "221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => reply(&mut write, "502 5.5.2 Command not implemented\r\n").await?,
        }
    }
}

async fn reply(write: &mut (impl AsyncWrite + Unpin), text: &str) -> std::io::Result<()> {
    write.write_all(text.as_bytes()).await?;
    write.flush().await
}

/// One line with its line end, `None` at the end of the stream. Errors on a silent client
/// or a line longer than [`LINE_BYTES_MAX`].
async fn read_line(
    read: &mut (impl AsyncBufReadExt + AsyncRead + Unpin),
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let limit = u64::try_from(LINE_BYTES_MAX).unwrap_or(u64::MAX);
    let mut bounded = (&mut *read).take(limit);
    let n = tokio::time::timeout(IDLE_TIMEOUT, bounded.read_until(b'\n', &mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle client"))??;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        if line.len() >= LINE_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
        // The client closed in the middle of a line.
        return Ok(None);
    }
    Ok(Some(line))
}

/// The text after `DATA` up to the `.` line, dot-unstuffed. `None` if the client went
/// away; `Some(None)` if the message was larger than [`MESSAGE_BYTES_MAX`] (it is read to its
/// end and dropped, so the session can go on).
async fn read_data(
    read: &mut (impl AsyncBufReadExt + AsyncRead + Unpin),
) -> std::io::Result<Option<Option<Vec<u8>>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    loop {
        let Some(line) = read_line(read).await? else {
            return Ok(None);
        };
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some((!too_big).then_some(data)));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + line.len() > MESSAGE_BYTES_MAX {
            too_big = true;
            data.clear();
        }
        if !too_big {
            data.extend_from_slice(line);
        }
    }
}

/// The address in `FROM:<a@b> BODY=8BITMIME` (or `TO:<a@b>`), without brackets; `<>` is the
/// null sender and gives an empty string.
fn path_argument(argument: &str, keyword: &str) -> Option<String> {
    let head = argument.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = argument[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_owned())
}

impl ReceivedMail {
    /// The value of the first header called `name` (case-insensitive), unfolded, with any
    /// RFC 2047 encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = split_head(&self.data);
        header_value(headers, name).map(|raw| decode_encoded_words(&raw))
    }

    /// The `Subject`, decoded.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// The plain-text body, decoded from its transfer encoding (7bit, 8bit, quoted-printable
    /// or base64): the first `text/plain` part of a multipart message, or the whole body
    /// of a single-part one. Line ends are CRLF as on the wire.
    pub fn text_body(&self) -> String {
        let (headers, body) = split_head(&self.data);
        let content_type = header_value(headers, "Content-Type").unwrap_or_default();
        if content_type.to_ascii_lowercase().starts_with("multipart/") {
            if let Some(text) = first_text_plain(&content_type, body) {
                return text;
            }
        }
        decode_body(headers, body)
    }

    /// The first number of exactly six digits standing alone (no letter or digit touching
    /// it) in the text body: a verification code.
    pub fn find_code(&self) -> Option<String> {
        let text = self.text_body();
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if !chars[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let touches_before = start > 0 && chars[start - 1].is_alphanumeric();
            let touches_after = i < chars.len() && chars[i].is_alphanumeric();
            if i - start == 6 && !touches_before && !touches_after {
                return Some(chars[start..i].iter().collect());
            }
        }
        None
    }

    /// The first `http://` or `https://` URL in the text body that contains `contains`.
    /// A URL ends at white space, a quote or an angle bracket; a trailing `.`, `,`, `;`,
    /// `:`, `!`, `?` or `)` is taken as punctuation of the sentence around it.
    pub fn find_link(&self, contains: &str) -> Option<String> {
        let text = self.text_body();
        let mut rest = text.as_str();
        loop {
            let start = match (rest.find("http://"), rest.find("https://")) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => return None,
            };
            let candidate = &rest[start..];
            let end = candidate
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
                .unwrap_or(candidate.len());
            let url = candidate[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')']);
            if url.contains(contains) {
                return Some(url.to_owned());
            }
            rest = &candidate[end.max(1)..];
        }
    }
}

/// Headers and body, split at the first blank line.
fn split_head(data: &str) -> (&str, &str) {
    if let Some(i) = data.find("\r\n\r\n") {
        (&data[..i + 2], &data[i + 4..])
    } else if let Some(i) = data.find("\n\n") {
        (&data[..i + 1], &data[i + 2..])
    } else {
        (data, "")
    }
}

/// The unfolded value of the first header called `name`.
fn header_value(headers: &str, name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in headers.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(value) = found.as_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            if key.trim().eq_ignore_ascii_case(name) {
                found = Some(value.trim().to_owned());
            }
        }
    }
    found
}

/// The `name=value` parameter of a header value such as `multipart/alternative; boundary="x"`.
fn header_parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The decoded first `text/plain` part of a multipart body, looking into nested multiparts.
fn first_text_plain(content_type: &str, body: &str) -> Option<String> {
    let boundary = header_parameter(content_type, "boundary")?;
    let delimiter = format!("--{boundary}");
    for part in body.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part
            .strip_prefix("\r\n")
            .or_else(|| part.strip_prefix('\n'))
            .unwrap_or(part);
        // The CRLF before the next delimiter belongs to the delimiter.
        let part = part
            .strip_suffix("\r\n")
            .or_else(|| part.strip_suffix('\n'))
            .unwrap_or(part);
        let (headers, body) = split_head(part);
        // Parts without a Content-Type are text/plain (RFC 2045); the boundary parameter is
        // case-sensitive, so only the type is compared in lower case.
        let part_type =
            header_value(headers, "Content-Type").unwrap_or_else(|| "text/plain".into());
        let lower = part_type.to_ascii_lowercase();
        if lower.starts_with("text/plain") {
            return Some(decode_body(headers, body));
        }
        if lower.starts_with("multipart/") {
            if let Some(text) = first_text_plain(&part_type, body) {
                return Some(text);
            }
        }
    }
    None
}

/// `body` decoded per the Content-Transfer-Encoding in `headers`, as UTF-8.
fn decode_body(headers: &str, body: &str) -> String {
    let encoding = header_value(headers, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "quoted-printable" => {
            let bytes =
                quoted_printable::decode(body.as_bytes(), quoted_printable::ParseMode::Robust)
                    .expect("a quoted-printable body");
            String::from_utf8_lossy(&bytes).into_owned()
        }
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("a base64 body");
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => body.to_owned(),
    }
}

/// Decode RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`); white space between
/// two encoded words is dropped, as the RFC says.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut pending_space = String::new();
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((decoded, used)) = encoded_word(rest) {
            if !last_was_word {
                out.push_str(&pending_space);
            }
            pending_space.clear();
            out.push_str(&decoded);
            rest = &rest[used..];
            last_was_word = true;
            continue;
        }
        let next = rest.chars().next().map_or(1, char::len_utf8);
        let piece = &rest[..next];
        if piece.chars().all(char::is_whitespace) {
            pending_space.push_str(piece);
        } else {
            out.push_str(&pending_space);
            pending_space.clear();
            out.push_str(piece);
            last_was_word = false;
        }
        rest = &rest[next..];
    }
    out.push_str(&pending_space);
    out
}

/// The decoded text of the encoded word `rest` starts with, and its length.
fn encoded_word(rest: &str) -> Option<(String, usize)> {
    let inner = rest.strip_prefix("=?")?;
    let (_charset, after) = inner.split_once('?')?;
    let (encoding, after) = after.split_once('?')?;
    let end = after.find("?=")?;
    let text = &after[..end];
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "q" | "Q" => {
            let text = text.replace('_', " ");
            quoted_printable::decode(text.as_bytes(), quoted_printable::ParseMode::Robust).ok()?
        }
        _ => return None,
    };
    let used = rest.len() - after.len() + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(data: &str) -> ReceivedMail {
        ReceivedMail {
            from: "a@example.com".into(),
            to: vec!["b@example.com".into()],
            data: data.into(),
        }
    }

    #[test]
    fn decodes_an_encoded_subject_and_a_quoted_printable_body() {
        let m = mail(
            "Subject: =?utf-8?b?VsOpcmlmaWV6?= =?utf-8?q?_votre_e-mail?=\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n\
             Code =C3=A9t=C3=A9: 123456, lien https://x.test/v?t=3D1=\r\n2.\r\n",
        );
        assert_eq!(m.subject().as_deref(), Some("Vérifiez votre e-mail"));
        assert_eq!(
            m.text_body(),
            "Code été: 123456, lien https://x.test/v?t=12.\r\n"
        );
        assert_eq!(m.find_code().as_deref(), Some("123456"));
        assert_eq!(
            m.find_link("x.test").as_deref(),
            Some("https://x.test/v?t=12")
        );
    }

    #[test]
    fn reads_the_text_part_of_a_base64_multipart() {
        let text = base64::engine::general_purpose::STANDARD.encode("Grüße 987654\r\n");
        let m = mail(&format!(
            "Subject: hi\r\nContent-Type: multipart/alternative;\r\n boundary=\"Ab1\"\r\n\r\n\
             --Ab1\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{text}\r\n\
             --Ab1\r\nContent-Type: text/html\r\n\r\n<p>000000</p>\r\n--Ab1--\r\n"
        ));
        assert_eq!(m.text_body(), "Grüße 987654\r\n");
        assert_eq!(m.find_code().as_deref(), Some("987654"));
    }

    #[test]
    fn a_code_must_stand_alone() {
        let m = mail("Subject: x\r\n\r\nid a123456 1234567 12345 x-654321-y\r\n");
        assert_eq!(m.find_code().as_deref(), Some("654321"));
        assert_eq!(mail("Subject: x\r\n\r\nnone here\r\n").find_code(), None);
    }

    #[test]
    fn finds_the_first_link_that_matches() {
        let m =
            mail("Subject: x\r\n\r\nSee (https://a.test/one), then <http://b.test/reset?t=9>.\r\n");
        assert_eq!(m.find_link("a.test").as_deref(), Some("https://a.test/one"));
        assert_eq!(
            m.find_link("reset").as_deref(),
            Some("http://b.test/reset?t=9")
        );
        assert_eq!(m.find_link("nowhere"), None);
    }

    #[test]
    fn parses_envelope_paths() {
        assert_eq!(
            path_argument("FROM:<a@b.test> BODY=8BITMIME", "FROM:").as_deref(),
            Some("a@b.test")
        );
        assert_eq!(
            path_argument("to: <c@d.test>", "TO:").as_deref(),
            Some("c@d.test")
        );
        assert_eq!(path_argument("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_argument("FROM:a@b", "FROM:"), None);
    }
}
