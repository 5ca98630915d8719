//! WebSocket glue: drives one socket's [`ServerSession`] with frames, finished requests and
//! time, and writes what it says.

use crate::service::{ApiResponse, Caller, Service, SocketContext};
use crate::settings::Settings;
use futures_util::{SinkExt, StreamExt};
use gridsocket_core::{
    Instant, OutFrame, RequestHandle, ServerConfig, ServerEvent, ServerSession, close_code,
};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

/// The read buffer per socket: tungstenite's default (128 KiB, zero-filled) would cost that
/// much memory for every idle connection.
const READ_BUFFER: usize = 4096;

fn ws_config(settings: &Settings) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * settings.max_frame_bytes.max(READ_BUFFER))
        .max_message_size(Some(settings.max_frame_bytes))
        .max_frame_size(Some(settings.max_frame_bytes))
}

/// Serves one WebSocket connection. `admitted` is false when the server is at its connection
/// limit: the socket is then closed with 1013 right after the handshake.
pub async fn serve_socket(
    stream: TcpStream,
    service: Arc<Service>,
    settings: Arc<Settings>,
    cancel: CancellationToken,
    admitted: bool,
) {
    let mut target = String::new();
    let mut authorization = None;
    // The error type is tungstenite's, fixed by its callback signature.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(resp)
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(ws_config(&settings)),
    );
    let mut ws = match handshake.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "websocket handshake failed");
            return;
        }
    };
    let config = ServerConfig {
        max_frame_len: settings.max_frame_bytes,
        max_in_flight: settings.max_in_flight,
        request_timeout: settings.request_timeout(),
    };
    let (mut session, context) = if !admitted {
        let body = gridsocket_core::wire::error_body_json(
            "too_many_connections",
            "the server is at its connection limit; retry with backoff",
        );
        (
            ServerSession::reject(config, 503, &body, close_code::TRY_AGAIN_LATER),
            None,
        )
    } else {
        match service.open_socket(&target, authorization.as_deref()).await {
            Ok(ctx) => (ServerSession::accept(config), Some(ctx)),
            Err(refusal) => (
                ServerSession::reject(config, refusal.status, &refusal.body, refusal.close_code),
                None,
            ),
        }
    };
    let (done_tx, mut done_rx) =
        mpsc::channel::<(RequestHandle, ApiResponse)>(settings.max_in_flight.max(1));
    loop {
        while let Some(ServerEvent::Request { handle, request }) = session.poll_event() {
            let Some(SocketContext { app, caller, .. }) = context.as_ref() else {
                continue;
            };
            let (service, app, caller, done) = (
                service.clone(),
                app.clone(),
                caller.clone(),
                done_tx.clone(),
            );
            tokio::spawn(async move {
                let caller: &Caller = &caller;
                let resp = service
                    .handle_app(&app, caller, request, std::time::Instant::now())
                    .await;
                // The socket may be gone; the request's effects stand either way.
                let _ = done.send((handle, resp)).await;
            });
        }
        if flush(&mut ws, &mut session).await.is_err() || session.is_closed() {
            break;
        }
        let deadline = session.poll_timeout();
        tokio::select! {
            msg = ws.next() => {
                let now = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => session.handle_text(now, text.as_str()),
                    Some(Ok(Message::Binary(bytes))) => session.handle_binary(now, bytes.len()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => {
                        session.handle_disconnect(now);
                        break;
                    }
                    Some(Err(WsError::Capacity(e))) => {
                        tracing::debug!(error = %e, "oversize frame");
                        session.close(now, close_code::MESSAGE_TOO_BIG, "frame too large");
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        session.handle_disconnect(now);
                        break;
                    }
                }
            }
            Some((handle, resp)) = done_rx.recv() => {
                session.complete(Instant::now(), handle, resp.status, &resp.body);
            }
            _ = sleep_until(deadline) => session.handle_timeout(Instant::now()),
            _ = cancel.cancelled() => {
                session.close(Instant::now(), close_code::SERVICE_RESTART, "server restarting");
            }
        }
    }
    let _ = ws.close(None).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes every queued frame, then flushes once (coalescing them into few writes).
async fn flush(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    session: &mut ServerSession,
) -> Result<(), WsError> {
    while let Some(frame) = session.poll_transmit() {
        match frame {
            OutFrame::Text(text) => ws.feed(Message::text(text)).await?,
            OutFrame::Close { code, reason } => {
                ws.feed(Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                })))
                .await?;
            }
        }
    }
    // Also sends the pongs tungstenite queued while reading pings.
    ws.flush().await
}
