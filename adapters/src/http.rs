//! Reading an HTTP response body from a service outside the hub without trusting its size or
//! its pace: [`read_limited`] stops at a byte ceiling and, if given one, at a deadline.
//!
//! Used by Google sign-in (discovery document, key set, token response) and by the inference
//! providers (error bodies and whole JSON answers), so a misbehaving upstream can neither fill
//! memory nor hold a request past its deadline.

use tokio::time::Instant;

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadLimitedError {
    /// The body (announced or received so far) is larger than the ceiling.
    #[error("the body is larger than {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    /// The deadline passed before the body ended.
    #[error("the body did not arrive before the deadline")]
    DeadlineElapsed,
    /// The connection failed while the body was being read.
    #[error("the body could not be read")]
    Read(#[source] reqwest::Error),
}

/// Reads the whole body of `response`, refusing it once it exceeds `max_bytes` (at once when
/// its `Content-Length` already says so) and, with a `deadline`, giving up when it passes.
/// Without a deadline, only the client's own timeout bounds the read.
pub async fn read_limited(
    mut response: reqwest::Response,
    max_bytes: usize,
    deadline: Option<Instant>,
) -> Result<Vec<u8>, ReadLimitedError> {
    let too_large = ReadLimitedError::TooLarge { max_bytes };
    if response
        .content_length()
        .is_some_and(|len| len > max_bytes as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    loop {
        let chunk = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, response.chunk())
                .await
                .map_err(|_| ReadLimitedError::DeadlineElapsed)?,
            None => response.chunk().await,
        };
        match chunk.map_err(ReadLimitedError::Read)? {
            None => return Ok(body),
            Some(chunk) if body.len() + chunk.len() > max_bytes => return Err(too_large),
            Some(chunk) => body.extend_from_slice(&chunk),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// A server on a loopback port (plain threads, blocking sockets) that answers each
    /// connection with `head` then `body`, then keeps the connection open until the client
    /// closes it.
    fn serve(head: &str, body: &[u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let answer = [head.as_bytes(), body].concat();
        std::thread::spawn(move || {
            for mut socket in listener.incoming().flatten() {
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut request = [0u8; 4_096];
                    let _ = socket.read(&mut request);
                    let _ = socket.write_all(&answer);
                    // Returns once the client hangs up.
                    let _ = socket.read_to_end(&mut Vec::new());
                });
            }
        });
        format!("http://{address}/")
    }

    async fn get(url: &str) -> reqwest::Response {
        reqwest::get(url).await.expect("the local server answers")
    }

    #[tokio::test]
    async fn a_body_within_the_ceiling_is_read_whole() {
        let url = serve("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"hello");
        let body = read_limited(get(&url).await, 5, None).await.expect("read");
        assert_eq!(body, b"hello");
    }

    #[tokio::test]
    async fn a_body_announced_or_streamed_past_the_ceiling_is_refused() {
        let announced = serve("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n", b"hello!");
        let err = read_limited(get(&announced).await, 5, None)
            .await
            .expect_err("too large");
        assert!(
            matches!(err, ReadLimitedError::TooLarge { max_bytes: 5 }),
            "{err:?}"
        );

        let chunked = serve(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"6\r\nhello!\r\n0\r\n\r\n",
        );
        let err = read_limited(get(&chunked).await, 5, None)
            .await
            .expect_err("too large");
        assert!(
            matches!(err, ReadLimitedError::TooLarge { max_bytes: 5 }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_body_that_stalls_past_the_deadline_is_given_up() {
        // The server announces more than it sends and keeps the connection open.
        let url = serve("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", b"hello");
        let response = get(&url).await;
        let deadline = Instant::now() + Duration::from_millis(100);
        let err = read_limited(response, 64, Some(deadline))
            .await
            .expect_err("deadline");
        assert!(matches!(err, ReadLimitedError::DeadlineElapsed), "{err:?}");
    }
}
