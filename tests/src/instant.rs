//! A participant that answers every call with `200 {}` at once: the benchmark's
//! participant (the coordinator is what is measured) and the HTTPS participant
//! of the TLS tests.

/// Starts the participant on a port of its own, over HTTPS with `tls` when given,
/// and returns its base URL. It reads the request body, as every real participant
/// does: a server that answers before the body is read cannot reuse the
/// connection, and the coordinator would then pay a TCP connect per call.
pub fn start(tls: Option<rustls::ServerConfig>) -> std::io::Result<String> {
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().default_service(actix_web::web::to(
            |_body: actix_web::web::Bytes| async {
                actix_web::HttpResponse::Ok()
                    .content_type("application/json")
                    .body("{}")
            },
        ))
    })
    .workers(1)
    .disable_signals();
    let (server, scheme) = match tls {
        Some(config) => (server.bind_rustls_0_23(("127.0.0.1", 0), config)?, "https"),
        None => (server.bind(("127.0.0.1", 0))?, "http"),
    };
    let url = format!("{scheme}://127.0.0.1:{}", server.addrs()[0].port());
    tokio::spawn(server.run());
    Ok(url)
}
