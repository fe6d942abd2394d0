//! The one MCP handler every transport serves. It is built per session (or per request on
//! stateless HTTP), so it holds only a clone of the engine handle plus this session's
//! legacy `resources/subscribe` set. Its tools, prompts and resources each live in their own
//! module; this one answers the protocol and routes.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::*;
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, prompt_handler, tool_handler};

use switchboard_actors::Engine;

use super::resources::{burst, changed_uris_of, ev_is_new_call, rank};
use super::schema::portable;
use super::tools::{accepted_for, fail};

/// Names the seeds used (dots), served as aliases but never listed: Claude, Cursor and the
/// OpenAI API reject dotted tool names.
const ALIASES: &[(&str, &str)] = &[
    ("telephony.call", "telephony_call"),
    ("telephony.status", "telephony_status"),
    ("telephony.cancel", "telephony_cancel"),
    ("telephony.transcript", "telephony_transcript"),
    ("telephony.list", "telephony_list"),
    ("telephony.wait", "telephony_wait"),
];

#[derive(Clone)]
pub struct TelephonyServer {
    pub(super) engine: Engine,
    /// URIs this session subscribed to with the legacy `resources/subscribe`.
    pub(super) subscriptions: Arc<Mutex<HashSet<String>>>,
    pub(super) watching: Arc<AtomicBool>,
    /// The lowest level this session asked for with `logging/setLevel` (its rank, see
    /// [`super::resources::rank`]); call progress goes out as `notifications/message` at or
    /// above it. `None` until the client sets a level: no log messages unasked.
    pub(super) log_level: Arc<Mutex<Option<u8>>>,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl TelephonyServer {
    pub fn new(engine: Engine) -> Self {
        let mut tool_router = Self::tool_router();
        for route in tool_router.map.values_mut() {
            let tool = &mut route.attr;
            let mut input = tool.input_schema.as_ref().clone();
            portable(&mut input);
            tool.input_schema = Arc::new(input);
            if let Some(out) = &tool.output_schema {
                let mut out = out.as_ref().clone();
                portable(&mut out);
                tool.output_schema = Some(Arc::new(out));
            }
        }
        TelephonyServer {
            engine,
            subscriptions: Arc::default(),
            watching: Arc::default(),
            log_level: Arc::default(),
            tool_router,
            prompt_router: Self::prompt_router(),
        }
    }

    /// What a client is told when it names a tool we do not have.
    fn unknown_tool(&self, name: &str) -> ErrorData {
        let mut names: Vec<String> = self
            .tool_router
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        ErrorData::invalid_params(
            format!("unknown tool '{name}'; the tools are: {}", names.join(", ")),
            None,
        )
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for TelephonyServer {
    // Logging is deprecated by SEP-2577 for 2026-07-28 clients; clients of 2025-11-25 and
    // older still set a level and show the messages.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("switchboard", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Place and follow real phone calls. telephony_call starts a call and returns a callId at once; \
             telephony_wait follows it (up to 50 s per call, repeat until ended: true); telephony_transcript and \
             telephony_status read it; telephony_cancel hangs up. Numbers are E.164 (+14155550123).",
        )
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == request.name) {
            request.name = (*to).into();
        }
        let name = request.name.to_string();
        if !self.tool_router.has_route(&name) {
            return Err(self.unknown_tool(&name));
        }
        let tcc = ToolCallContext::new(self, request, context);
        match self.tool_router.call(tcc).await {
            // Argument errors go to the model as a tool error it can correct, not an opaque
            // JSON-RPC error.
            Err(e) if e.code == ErrorCode::INVALID_PARAMS => Ok(fail(format!(
                "invalid arguments for {name}: {}; {}",
                e.message,
                accepted_for(&name)
            ))
            .into()),
            // rmcp reports arguments that do not deserialize as a tool error already; add
            // what is accepted so the model can correct itself.
            Ok(CallToolResponse::Complete(r))
                if r.is_error == Some(true)
                    && r.content.iter().any(|c| {
                        c.as_text()
                            .is_some_and(|t| t.text.contains("deserialize parameters"))
                    }) =>
            {
                let why: Vec<String> = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect();
                Ok(fail(format!(
                    "invalid arguments for {name}: {}; {}",
                    why.join(" ")
                        .replace("failed to deserialize parameters: ", ""),
                    accepted_for(&name)
                ))
                .into())
            }
            other => other,
        }
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.log_level.lock().unwrap_or_else(|p| p.into_inner()) = Some(rank(request.level));
        self.start_watching(context.peer.clone());
        Ok(())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.start_watching(context.peer.clone());
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.resource_list(request, context).await
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.resource_templates(request, context).await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.resource_read(request, context).await
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.uri.clone());
        self.start_watching(context.peer.clone());
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, cx: SubscriptionContext) -> Result<(), ErrorData> {
        let mut events = self.engine.subscribe(None);
        loop {
            tokio::select! {
                _ = cx.cancelled() => return Ok(()),
                ev = events.next() => {
                    let Some(ev) = ev else { return Ok(()) };
                    // One change, one notification per URI, as on the legacy path.
                    let (burst, closed) = burst(ev, &mut events).await;
                    // The sink drops what the client did not ask for.
                    if burst.iter().any(|ev| ev_is_new_call(ev)) {
                        let _ = cx.sink().notify_resource_list_changed().await;
                    }
                    for uri in changed_uris_of(&burst) {
                        let _ = cx.sink().notify_resource_updated(uri).await;
                    }
                    if closed {
                        return Ok(());
                    }
                }
            }
        }
    }
}
