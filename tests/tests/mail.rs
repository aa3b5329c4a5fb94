//! The mailer against a real SMTP server on a free port, an SMTP port nobody listens on, a
//! server that never answers, and the folder transport.

use hub_adapters::mail::{MailError, MailSettings, MailTransport, Mailer, OutgoingMail, SmtpTls};
use hub_tests::smtp::{ReceivedMail, SmtpServer};
use std::error::Error as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

fn smtp_settings(host: String, port: u16) -> MailSettings {
    MailSettings {
        transport: MailTransport::Smtp,
        smtp_host: host,
        smtp_port: port,
        smtp_tls: SmtpTls::None,
        timeout_ms: 5_000,
        ..MailSettings::default()
    }
}

/// A verification message with non-ASCII text around a code and a link, and a line longer
/// than the 76 characters quoted-printable allows, so the body is certainly encoded.
fn verification(to: &str, code: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.into(),
        subject: "Vérifiez votre adresse — Smart AI Hub".into(),
        text: format!(
            "Bonjour Zoë,\r\n\r\nVotre code de vérification : {code}\r\n\
             Ou ouvrez https://hub.example/verify?token=Zx9_Q-1&email=zo%C3%AB pour confirmer \
             votre adresse e-mail, il expire dans quinze minutes. Grüße aus 東京 ✓\r\n"
        ),
    }
}

/// Everything an error would print: its text, its `Debug`, and each cause.
fn everything_printed(error: &MailError) -> String {
    let mut printed = format!("{error}\n{error:?}\n");
    let mut source = error.source();
    while let Some(cause) = source {
        printed.push_str(&format!("{cause}\n{cause:?}\n"));
        source = cause.source();
    }
    printed
}

#[tokio::test]
async fn a_message_sent_over_smtp_arrives_with_its_subject_recipient_code_and_link_intact() {
    let server = SmtpServer::start().await;
    let mailer = Mailer::new(&smtp_settings(server.host(), server.port())).expect("mailer");
    let sent = verification("Zoë Example <zoe@example.com>", "482913");

    mailer
        .send(sent.clone())
        .await
        .expect("the server takes it");

    let mail = server.next_message(WAIT).await;
    assert_eq!(mail.from, "no-reply@localhost");
    assert_eq!(mail.to, vec!["zoe@example.com".to_owned()]);
    assert_eq!(mail.subject().as_deref(), Some(sent.subject.as_str()));
    let to = mail.header("To").expect("a To header");
    assert!(
        to.contains("<zoe@example.com>") && to.contains("Zoë"),
        "{to}"
    );
    assert_eq!(mail.text_body().trim_end(), sent.text.trim_end());
    assert_eq!(mail.find_code().as_deref(), Some("482913"));
    assert_eq!(
        mail.find_link("/verify").as_deref(),
        Some("https://hub.example/verify?token=Zx9_Q-1&email=zo%C3%AB")
    );
}

#[tokio::test]
async fn a_message_with_html_arrives_with_its_plain_text_part_readable() {
    let server = SmtpServer::start().await;
    let mailer = Mailer::new(&smtp_settings(server.host(), server.port())).expect("mailer");
    let sent = verification("zoe@example.com", "105937");

    mailer
        .send_with_html(
            sent.clone(),
            "<p>Votre code : <b>999999</b> — <a href=\"https://hub.example/x\">ici</a></p>".into(),
        )
        .await
        .expect("the server takes it");

    let mail = server.next_message(WAIT).await;
    assert_eq!(mail.text_body().trim_end(), sent.text.trim_end());
    assert_eq!(mail.find_code().as_deref(), Some("105937"));
}

#[tokio::test]
async fn messages_sent_one_after_another_arrive_in_order_and_concurrent_ones_all_arrive() {
    let server = SmtpServer::start().await;
    let mailer = Mailer::new(&smtp_settings(server.host(), server.port())).expect("mailer");

    for code in ["100001", "100002", "100003"] {
        mailer
            .send(verification("a@example.com", code))
            .await
            .expect("sent");
    }
    for code in ["100001", "100002", "100003"] {
        let mail = server.next_message(WAIT).await;
        assert_eq!(mail.find_code().as_deref(), Some(code));
    }

    let sends = (0..20).map(|i| {
        let mailer = mailer.clone();
        async move {
            mailer
                .send(verification(
                    &format!("user{i}@example.com"),
                    &format!("{:06}", 200_000 + i),
                ))
                .await
        }
    });
    for result in futures::future::join_all(sends).await {
        result.expect("sent");
    }
    let mut codes = Vec::new();
    for _ in 0..20 {
        let mail = server.next_message(WAIT).await;
        codes.push(mail.find_code().expect("a code"));
    }
    codes.sort();
    let expected: Vec<String> = (0..20).map(|i| format!("{:06}", 200_000 + i)).collect();
    assert_eq!(codes, expected);
    assert!(server.try_next_message().await.is_none());
}

#[tokio::test]
async fn a_server_that_is_not_listening_gives_an_error_that_shows_no_secret() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let password = "Sup3r-Secret-Pa55word";
    let settings = MailSettings {
        smtp_username: Some("hub-mailer".into()),
        smtp_password: Some(password.into()),
        timeout_ms: 2_000,
        ..smtp_settings("127.0.0.1".into(), port)
    };
    let mailer = Mailer::new(&settings).expect("mailer");

    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        mailer.send(verification("zoe@example.com", "482913")),
    )
    .await
    .expect("the send gives up within its timeout");

    let error = result.expect_err("nobody is listening");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(error, MailError::Smtp { .. } | MailError::Timeout { .. }),
        "{error:?}"
    );
    let printed = everything_printed(&error);
    assert!(printed.contains(&port.to_string()), "{printed}");
    assert!(!printed.contains(password), "{printed}");
    assert!(!printed.contains("482913"), "{printed}");
}

#[tokio::test]
async fn a_server_that_never_answers_gives_up_within_the_timeout() {
    // Connections complete in the backlog, but nobody ever accepts or greets.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("address").port();
    let settings = MailSettings {
        timeout_ms: 500,
        ..smtp_settings("127.0.0.1".into(), port)
    };
    let mailer = Mailer::new(&settings).expect("mailer");

    let started = Instant::now();
    let error = mailer
        .send(verification("zoe@example.com", "482913"))
        .await
        .expect_err("no greeting ever comes");

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, MailError::Timeout { .. } | MailError::Smtp { .. }),
        "{error:?}"
    );
    drop(silent);
}

#[tokio::test]
async fn the_folder_transport_writes_a_readable_eml() {
    let folder = std::env::temp_dir().join(format!("aihub-mail-test-{}", Uuid::new_v4()));
    let mailer = Mailer::new(&MailSettings {
        folder: folder.clone(),
        ..MailSettings::default()
    })
    .expect("mailer");
    let sent = verification("zoe@example.com", "731904");

    let result = mailer.send(sent.clone()).await;

    let files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let contents = files
        .first()
        .and_then(|file| std::fs::read_to_string(file).ok());
    let _ = std::fs::remove_dir_all(&folder);

    result.expect("written");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|ext| ext == "eml"));
    let mail = ReceivedMail {
        from: String::new(),
        to: Vec::new(),
        data: contents.expect("a readable UTF-8 file"),
    };
    assert_eq!(mail.subject().as_deref(), Some(sent.subject.as_str()));
    assert!(mail
        .header("To")
        .is_some_and(|to| to.contains("zoe@example.com")));
    assert_eq!(mail.text_body().trim_end(), sent.text.trim_end());
    assert_eq!(mail.find_code().as_deref(), Some("731904"));
    assert!(mail.find_link("hub.example/verify").is_some());
}
