"""The console's web application (Starlette): pages, forms and live updates.

Every figure comes from the gRPC APIs, called with the signed-in person's token; the
services decide who may do what (ops only, own telco, four eyes) and the console shows their
refusal in words. Forms are POSTed with the session's CSRF token; pages are server-rendered
(Jinja2, autoescaped), with one small script of our own for live updates.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idc.ops.v1 import approval_service_pb2 as approvals_pb
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from services.console import views
from services.console.backend import Backend, GrpcBackend, Refused
from services.console.domain import (
    DeviceSync,
    PortUse,
    capacity_chart,
    committed_history,
    search,
    sync_label,
    text_diff,
)
from services.console.sessions import COOKIE_NAME, SessionStore, WebSession, csrf_ok
from services.console.settings import ConsoleSettings

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024
MAX_REASON_CHARS = 1000
SECURITY_HEADERS = [
    # Our own script and stylesheet only: nothing from elsewhere, nothing inline.
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]

Handler = Callable[[Request, WebSession], Awaitable[Response]]


class SecurityHeaders:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    env = templates.env
    env.autoescape = True
    env.filters.update(
        order_state=views.order_state, order_type=views.order_type,
        approval_state=views.approval_state, circuit_state=views.circuit_state,
        side=views.side, operation=views.operation, step=views.step, outcome=views.outcome,
        when=views.when, end_text=views.end_text,
        watch_state=lambda value: views.WATCH_STATES.get(value, "?"),
    )
    return templates


class Console:
    def __init__(self, backend_factory: Callable[[], Backend], sessions: SessionStore) -> None:
        self._backend_factory = backend_factory
        self._backend: Backend | None = None
        self.sessions = sessions
        self.templates = _templates()

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self._backend_factory()
        return self._backend

    # -- plumbing -------------------------------------------------------------------------

    def session_of(self, request: Request) -> WebSession:
        return self.sessions.get(request.cookies.get(COOKIE_NAME)) or self.sessions.new()

    @staticmethod
    def with_cookie(request: Request, response: Response, session: WebSession) -> Response:
        if request.cookies.get(COOKIE_NAME) != session.id:
            response.set_cookie(COOKIE_NAME, session.id, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
        return response

    def render(self, request: Request, session: WebSession, template: str,
               status_code: int = 200, **context: Any) -> Response:
        response = self.templates.TemplateResponse(
            request, template,
            {"session": session, "flashes": session.take_flashes(), **context},
            status_code=status_code)
        return self.with_cookie(request, response, session)

    def redirect(self, request: Request, session: WebSession, to: str) -> Response:
        return self.with_cookie(request, RedirectResponse(to, status_code=303), session)

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page for signed-in ops: others go to the sign-in page."""

        async def endpoint(request: Request) -> Response:
            session = self.session_of(request)
            if not session.signed_in:
                return self.redirect(request, session, "/signin")
            try:
                return await handler(request, session)
            except Refused as refusal:
                return self.refused(request, session, refusal)

        return endpoint

    def action(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A form POST of a signed-in person, with its CSRF token checked first."""

        async def endpoint(request: Request) -> Response:
            session = self.session_of(request)
            form = await form_fields(request)
            if not csrf_ok(session, form.get("csrf")):
                return self.csrf_refused(request, session)
            if not session.signed_in:
                return self.redirect(request, session, "/signin")
            request.state.form = form
            return await handler(request, session)

        return endpoint

    def csrf_refused(self, request: Request, session: WebSession) -> Response:
        return self.render(
            request, session, "error.html", status_code=403, title="Form refused",
            message="This form was not issued by this console session (CSRF check failed), "
                    "so nothing was changed. Reload the page and try again.")

    def refused(self, request: Request, session: WebSession, refusal: Refused) -> Response:
        status = 403 if refusal.permission else 502
        return self.render(request, session, "error.html", status_code=status,
                           title=f"Refused by the {refusal.service} service",
                           message=refusal.message)

    # -- sign in and out ------------------------------------------------------------------

    async def signin_page(self, request: Request) -> Response:
        session = self.session_of(request)
        return self.render(request, session, "signin.html")

    async def signin(self, request: Request) -> Response:
        session = self.session_of(request)
        form = await form_fields(request)
        if not csrf_ok(session, form.get("csrf")):
            return self.csrf_refused(request, session)
        token = form.get("token", "").strip()
        if not token:
            session.flash("error", "Enter your ops API token.")
            return self.redirect(request, session, "/signin")
        try:
            pending = await self.backend.pending(token)
        except Refused as refusal:
            session.flash("error", sign_in_refusal(refusal))
            return self.redirect(request, session, "/signin")
        telco = next((p.payload.telco_id for p in pending if p.payload.telco_id), "")
        signed_in = self.sessions.sign_in(session, token, telco)
        signed_in.flash("ok", "Signed in.")
        response = RedirectResponse("/approvals", status_code=303)
        response.set_cookie(COOKIE_NAME, signed_in.id, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    async def signout(self, request: Request, session: WebSession) -> Response:
        self.sessions.drop(session.id)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    # -- approvals ------------------------------------------------------------------------

    async def approvals(self, request: Request, session: WebSession) -> Response:
        pending = await self.backend.pending(session.token)
        items = await asyncio.gather(*(self._review(session.token, p) for p in pending))
        return self.render(request, session, "approvals.html", items=items)

    async def _review(self, token: str, pending: approvals_pb.PendingApproval
                      ) -> dict[str, Any]:
        """One pending approval with what the approver needs to judge its payload: the
        dry run's leaf-by-leaf difference to the router's running configuration, or, from
        a provisioning service without it, a text difference the console computes."""
        order, payload = pending.order, pending.payload
        review: dict[str, Any] = {"pending": pending, "order": order, "payload": payload,
                                  "leaves": [], "diff": [], "baseline": "", "drift": "",
                                  "running": "", "dry_run": ""}
        if not payload.sha256:
            review["baseline"] = ("The provisioning service has not rendered this order's "
                                  "payload yet; it appears here when it has.")
            return review
        try:
            dry_run = await self.backend.dry_run(token, order.id)
        except Refused as refusal:
            review["dry_run"] = f"Dry run unavailable: {refusal.message}"
        else:
            again = [p for p in dry_run.payloads if p.router_name == payload.router_name]
            same = bool(again) and again[0].sha256 == payload.sha256
            review["dry_run"] = ("A dry run now renders the same payload." if same else
                                 "A dry run now renders a DIFFERENT payload: the approval "
                                 "would no longer hold; wait for the new plan.")
            for router in dry_run.routers:
                if router.device_name == payload.router_name:
                    return self._dry_run_difference(review, router)
        await self._computed_difference(token, review)
        return review

    @staticmethod
    def _dry_run_difference(review: dict[str, Any], router: prov_pb.RouterDryRun
                            ) -> dict[str, Any]:
        if router.HasField("error"):
            review["drift"] = f"{router.device_name} could not be read: {router.error.message}"
        review["running"] = router.running_config
        review["leaves"] = [(d.path, d.actual, d.intended) for d in router.differences]
        review["baseline"] = (
            f"From the dry run: what this payload changes on {router.device_name}, leaf by "
            f"leaf, against its running configuration read at {views.when(router.read_time)}."
            if router.differences else
            f"From the dry run: this payload changes nothing on {router.device_name}.")
        return review

    async def _computed_difference(self, token: str, review: dict[str, Any]) -> None:
        """The payload against the configuration the router carries for the circuit now
        (GetCircuitConfig's intended payload, which it reports in sync with running)."""
        order, payload = review["order"], review["payload"]
        baseline = ""
        try:
            config = await self.backend.circuit_config(token, order.circuit_id)
        except Refused as refusal:
            if refusal.code != "NOT_FOUND":
                review["drift"] = f"Running configuration unavailable: {refusal.message}"
        else:
            for router in config.configs:
                if router.device_name != payload.router_name:
                    continue
                if router.HasField("error"):
                    review["drift"] = (f"{router.device_name} could not be read: "
                                       f"{router.error.message}")
                elif not router.in_sync:
                    review["drift"] = (f"{router.device_name} runs something else than "
                                       "intended for this circuit.")
                review["running"] = router.running_config
                baseline = router.intended.content
        review["baseline"] = (
            "Computed by the console: the payload against the configuration the router "
            "carries for this circuit now." if baseline else
            "Computed by the console: the router carries nothing for this circuit yet, so "
            "all of the payload is new.")
        review["diff"] = text_diff(baseline, payload.content)

    async def approve(self, request: Request, session: WebSession) -> Response:
        order_id = request.path_params["order_id"]
        form = request.state.form
        try:
            await self.backend.approve(session.token, order_id, form.get("payload_sha256", ""),
                                       form.get("comment", "")[:MAX_REASON_CHARS])
        except Refused as refusal:
            session.flash("error", f"Approval refused: {refusal.message}")
            return self.redirect(request, session, "/approvals")
        session.flash("ok", f"You approved order {order_id}.")
        return self.redirect(request, session, f"/orders/{quote(order_id, safe='')}")

    async def reject(self, request: Request, session: WebSession) -> Response:
        order_id = request.path_params["order_id"]
        reason = request.state.form.get("reason", "").strip()
        if not reason:
            session.flash("error", "A rejection needs a reason; the customer sees it.")
            return self.redirect(request, session, "/approvals")
        try:
            await self.backend.reject(session.token, order_id, reason[:MAX_REASON_CHARS])
        except Refused as refusal:
            session.flash("error", f"Rejection refused: {refusal.message}")
            return self.redirect(request, session, "/approvals")
        session.flash("ok", f"You rejected order {order_id}.")
        return self.redirect(request, session, f"/orders/{quote(order_id, safe='')}")

    # -- one order, live ------------------------------------------------------------------

    async def order(self, request: Request, session: WebSession) -> Response:
        order = await self.backend.order(session.token, request.path_params["order_id"])
        return self.render(request, session, "order.html", order=order,
                           live=views.order_event(order))

    async def order_events(self, request: Request) -> Response:
        """Server-sent events: the order as WatchOrder streams it, until it is final."""
        session = self.session_of(request)
        if not session.signed_in:
            return PlainTextResponse("sign in first", status_code=401)
        order_id = request.path_params["order_id"]
        backend, token = self.backend, session.token

        async def stream() -> AsyncIterator[str]:
            try:
                async for message in backend.watch(token, order_id):
                    event = views.order_event(message.order)
                    if event["terminal"] and message.order.circuit_id:
                        circuit = await backend.circuit(token, message.order.circuit_id)
                        event["circuit_state"] = views.circuit_state(circuit.state)
                    yield f"event: order\ndata: {json.dumps(event)}\n\n"
            except Refused as refusal:
                yield f"event: problem\ndata: {json.dumps(refusal.message)}\n\n"
            yield "event: end\ndata: {}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    # -- circuits and routers -------------------------------------------------------------

    async def _checks(self, token: str, names: list[str] | None = None
                      ) -> tuple[dict[str, DeviceSync], str]:
        try:
            statuses = await self.backend.check_sync(token, names or [])
        except Refused as refusal:
            return {}, f"Sync status unavailable: {refusal.message}"
        return {s.device_name: views.device_sync(s) for s in statuses}, ""

    async def circuits(self, request: Request, session: WebSession) -> Response:
        query = request.query_params.get("q", "")[:200]
        state = request.query_params.get("state", "")[:40]
        listed, (checks, problem), (watched, watch_problem) = await asyncio.gather(
            self.backend.circuits(session.token), self._checks(session.token),
            self._watched(session.token, not_in_sync_only=True))
        summaries = search([views.circuit_summary(c) for c in listed], query, state)
        rows = [(c, [(r, sync_label(c, r, checks).value) for r in c.routers],
                 [views.watch_label(w) for w in watched if w.circuit_id == c.id])
                for c in summaries]
        return self.render(request, session, "circuits.html", rows=rows, query=query,
                           drift_banner=views.drift_banner(watched),
                           watch_problem=watch_problem,
                           state=state, checks=sorted(checks.values(),
                                                      key=lambda c: c.device_name),
                           sync_problem=problem, summary=views.sync_summary,
                           states=[views.circuit_state(v) for v in range(1, 8)])

    async def _watched(self, token: str, circuit_id: str = "", not_in_sync_only: bool = False
                       ) -> tuple[list[prov_pb.CircuitSyncStatus], str]:
        try:
            return await self.backend.sync_statuses(token, circuit_id, not_in_sync_only), ""
        except Refused as refusal:
            return [], f"Drift watch unavailable: {refusal.message}"

    async def check_device(self, request: Request, session: WebSession) -> Response:
        name = request.path_params["name"]
        checks, problem = await self._checks(session.token, [name])
        if problem:
            session.flash("error", problem)
        for check in checks.values():
            session.flash("ok" if check.in_sync else "error", views.sync_summary(check))
        return self.redirect(request, session, "/circuits")

    async def circuit(self, request: Request, session: WebSession) -> Response:
        circuit_id = request.path_params["circuit_id"]
        circuit = await self.backend.circuit(session.token, circuit_id)
        config, problem = None, ""
        try:
            config = await self.backend.circuit_config(session.token, circuit_id)
        except Refused as refusal:
            problem = refusal.message
        watched, watch_problem = await self._watched(session.token, circuit_id)
        return self.render(request, session, "circuit.html", circuit=circuit, config=config,
                           config_problem=problem, watched=watched, watch_problem=watch_problem,
                           drift_banner=views.drift_banner(watched))

    async def circuit_sync(self, request: Request, session: WebSession) -> Response:
        """Each router's sync status of one circuit, for the page's live refresh."""
        try:
            config = await self.backend.circuit_config(session.token,
                                                       request.path_params["circuit_id"])
        except Refused as refusal:
            return JSONResponse({"problem": refusal.message})
        return JSONResponse({
            "routers": {c.device_name: ("unreachable" if c.HasField("error") else
                                        "in sync" if c.in_sync else "drift")
                        for c in config.configs},
            "log": [[views.when(e.time), e.device_name, views.step(e.step),
                     views.outcome(e.outcome), e.message] for e in config.log],
        })

    async def redeploy(self, request: Request, session: WebSession) -> Response:
        circuit_id = request.path_params["circuit_id"]
        try:
            requested = await self.backend.redeploy(session.token, circuit_id)
        except Refused as refusal:
            session.flash("error", f"Redeploy refused: {refusal.message}")
        else:
            session.flash("ok", f"Repair requested ({requested.repair.repair_id}): it runs once "
                                "each telco's ops approved its router's payload (`idcctl ops "
                                "repair approve`); the sync status below updates by itself.")
        return self.redirect(request, session, f"/circuits/{quote(circuit_id, safe='')}")

    # -- capacity -------------------------------------------------------------------------

    async def capacity(self, request: Request, session: WebSession) -> Response:
        figures, completed = await asyncio.gather(
            self.backend.capacity(session.token), self.backend.completed_orders(session.token))
        history = committed_history(
            [c for c in map(views.completed_order, completed) if c is not None],
            datetime.now(UTC), figures.channel_committed_mbps)
        chart = capacity_chart(history, figures.channel_capacity_mbps)
        ports = [PortUse(p.port_id, p.speed_mbps, p.committed_mbps, p.reserved_mbps)
                 for p in figures.ports]
        return self.render(request, session, "capacity.html", figures=figures, chart=chart,
                           ports=ports, changes=len(history) - 2)

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/approvals", status_code=303)

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")


def sign_in_refusal(refusal: Refused) -> str:
    """Why a token may not sign in, in words."""
    if refusal.code == "UNAUTHENTICATED":
        return "The order service does not know this token (unknown or revoked)."
    if refusal.code == "PERMISSION_DENIED":
        return ("This is not an operations token: the console is for telco ops. "
                f"(The order service says: {refusal.message})")
    return f"Cannot sign in now: {refusal.message}"


async def form_fields(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (first value of each); oversized bodies give none."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def make_console_app(backend_factory: Callable[[], Backend],
                     sessions: SessionStore) -> tuple[Starlette, Console]:
    console = Console(backend_factory, sessions)
    routes = [
        Route("/", console.home),
        Route("/healthz", console.health),
        Route("/signin", console.signin_page, methods=["GET"]),
        Route("/signin", console.signin, methods=["POST"]),
        Route("/signout", console.action(console.signout), methods=["POST"]),
        Route("/approvals", console.page(console.approvals)),
        Route("/approvals/{order_id}/approve", console.action(console.approve),
              methods=["POST"]),
        Route("/approvals/{order_id}/reject", console.action(console.reject), methods=["POST"]),
        Route("/orders/{order_id}", console.page(console.order)),
        Route("/orders/{order_id}/events", console.order_events),
        Route("/circuits", console.page(console.circuits)),
        Route("/circuits/{circuit_id}", console.page(console.circuit)),
        Route("/circuits/{circuit_id}/sync", console.page(console.circuit_sync)),
        Route("/circuits/{circuit_id}/redeploy", console.action(console.redeploy),
              methods=["POST"]),
        Route("/devices/{name}/check", console.action(console.check_device), methods=["POST"]),
        Route("/capacity", console.page(console.capacity)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(SecurityHeaders)
    return app, console


def make_app(settings: ConsoleSettings) -> Starlette:
    backend: GrpcBackend | None = None

    def connect() -> Backend:
        nonlocal backend
        backend = GrpcBackend(settings.order_address, settings.provisioning_address,
                              settings.call_timeout_s, settings.grpc_tls)
        return backend

    app, _ = make_console_app(connect, SessionStore(settings.session_idle_s))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        if backend is not None:
            await backend.close()

    app.router.lifespan_context = lifespan
    return app
