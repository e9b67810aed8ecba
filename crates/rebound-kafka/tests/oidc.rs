//! OAUTHBEARER with OIDC (`-X sasl.oauthbearer.method=oidc`): librdkafka is built with the
//! HTTP client this needs, and a client configured the documented way asks the token endpoint
//! for a token with the client-credentials grant and the configured client id and secret. The
//! token endpoint is a real HTTP server on loopback; no broker is involved (one that validates
//! OIDC tokens cannot be set up here, so what a broker makes of the token stays unproven).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use rebound_kafka::{KafkaArgs, KafkaConfigPair, ProducerSettings, RecordProducer};

/// One HTTP request as the endpoint received it.
struct TokenRequest {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Serves token requests on loopback, answering each with an unsigned JWT (enough for the
/// client; nothing here validates it), and hands every request to the returned channel.
fn start_token_endpoint() -> (String, mpsc::Receiver<TokenRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let length = headers
                .iter()
                .find(|(name, _)| name == "content-length")
                .and_then(|(_, value)| value.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            // {"alg":"none"} . {"sub":"rebound","exp":4102444800,"iat":1764000000} . (no signature)
            let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyZWJvdW5kIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3NjQwMDAwMDB9.";
            let answer = format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600}}"#);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = sender.send(TokenRequest {
                request_line: request_line.trim().to_owned(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
    });
    (format!("http://{address}/realms/kafka/token"), receiver)
}

fn property(pair: &str) -> KafkaConfigPair {
    pair.parse().expect("KEY=VALUE")
}

#[test]
fn an_oidc_client_asks_the_token_endpoint_with_client_credentials() {
    let (token_url, requests) = start_token_endpoint();
    let mut args = KafkaArgs::for_brokers("127.0.0.1:9");
    args.kafka_config = vec![
        property("security.protocol=SASL_PLAINTEXT"),
        property("sasl.mechanisms=OAUTHBEARER"),
        property("sasl.oauthbearer.method=oidc"),
        property("sasl.oauthbearer.client.id=rebound-consumer"),
        property("sasl.oauthbearer.client.secret=client-secret"),
        property("sasl.oauthbearer.scope=kafka"),
        property(&format!("sasl.oauthbearer.token.endpoint.url={token_url}")),
    ];
    let producer = RecordProducer::new(&args, &ProducerSettings::awaited_copies())
        .expect("librdkafka accepts sasl.oauthbearer.method=oidc (built with libcurl)");

    let request = requests
        .recv_timeout(Duration::from_secs(30))
        .expect("librdkafka asked the token endpoint for a token");
    drop(producer);
    assert_eq!(request.request_line, "POST /realms/kafka/token HTTP/1.1");
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    // base64("rebound-consumer:client-secret")
    assert_eq!(
        header("authorization"),
        Some("Basic cmVib3VuZC1jb25zdW1lcjpjbGllbnQtc2VjcmV0")
    );
    assert!(
        request.body.contains("grant_type=client_credentials"),
        "{}",
        request.body
    );
    assert!(request.body.contains("scope=kafka"), "{}", request.body);
}
