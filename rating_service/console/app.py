"""The console's pages: the customer portal (opened by a signed link) and the operator pages.

Every page is an answer of the gRPC API, asked with the visitor's own credential: the portal's
pages with the link's token (the API answers it with that customer's view alone), the operator
pages with the API key the operator signed in with. The console adds no permission of its own
and removes none: a rater key sees nothing, because the API refuses it what the pages read.
Live parts of a page are fragments the page's script fetches again every few seconds.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import grpc
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rating_client.errors import RatingError
from rating_client.gen.rating.v1 import (
    admin_pb2,
    catalog_pb2,
    contract_pb2,
    ops_pb2,
    portal_pb2,
    rating_pb2,
    webhook_pb2,
)
from rating_service.console import charts
from rating_service.console.gateway import Credential, Gateway
from rating_service.console.metrics import MetricsReader

HERE = Path(__file__).parent
SESSION_COOKIE = "rating_console"
SESSION_SECONDS = 8 * 3600
LIVE_SECONDS = 2
"""How often a page's live parts are fetched again."""

ROLE_NAMES = {
    admin_pb2.ROLE_RATER: "rater",
    admin_pb2.ROLE_ADMIN: "admin",
    admin_pb2.ROLE_OPS: "ops",
}
OPERATOR_ROLES = ("admin", "ops")


@dataclass(frozen=True)
class ConsoleConfig:
    """Where the console finds the API, the server's metrics and the Temporal UI."""

    api_target: str
    metrics_url: str = ""
    temporal_ui_url: str = ""
    temporal_namespace: str = "default"


@dataclass
class OperatorSession:
    """A signed-in operator: the key they gave (kept in memory, never in the cookie)."""

    credential: Credential
    tenant_id: str
    key_id: str
    role: str
    expires_at: float


class Console:
    """The pages, the operator sessions and the one gRPC channel behind them."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.gateway = Gateway(config.api_target)
        self.metrics = MetricsReader(config.metrics_url)
        self.sessions: dict[str, OperatorSession] = {}
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            enable_async=False,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["money"] = _money
        self.templates.filters["estimate"] = _estimate

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """A template, with the settings every page shows."""
        context.setdefault("live_seconds", LIVE_SECONDS)
        body = self.templates.get_template(name).render(**context)
        return HTMLResponse(body, status_code=status_code)

    def refused(self, error: RatingError, *, title: str) -> HTMLResponse:
        """A page that says why the API refused, with the HTTP status that matches."""
        status = {
            grpc.StatusCode.UNAUTHENTICATED: 401,
            grpc.StatusCode.PERMISSION_DENIED: 403,
            grpc.StatusCode.NOT_FOUND: 404,
            grpc.StatusCode.INVALID_ARGUMENT: 400,
        }.get(error.code, 502)
        return self.render(
            "refused.html", status, title=title, reason=error.reason, message=error.message
        )

    # The customer portal.

    async def portal(self, request: Request) -> Response:
        """The portal page of the link's customer."""
        token = request.path_params["token"]
        try:
            account, invoices = await self._portal_reads(token)
        except RatingError as error:
            return self._portal_refused(error)
        return self.render(
            "portal.html", token=token, **_portal_view(account), invoices=invoices.invoices
        )

    async def portal_live(self, request: Request) -> Response:
        """The portal's live part (pools, usage, spend), fetched again every few seconds."""
        token = request.path_params["token"]
        try:
            account, _ = await self._portal_reads(token, invoices=False)
        except RatingError as error:
            return self._portal_refused(error)
        return self.render("portal_live.html", token=token, **_portal_view(account))

    async def portal_document(self, request: Request) -> Response:
        """An invoice's document, as a download."""
        token = request.path_params["token"]
        invoice_id = request.path_params["invoice_id"]
        document_format = request.path_params["format"]
        try:
            document = await self.gateway.call(
                self.gateway.portal.GetPortalInvoiceDocument,
                portal_pb2.GetPortalInvoiceDocumentRequest(
                    invoice_id=invoice_id, format=document_format
                ),
                Credential.portal_link(token),
            )
        except RatingError as error:
            return self._portal_refused(error)
        return Response(
            document.content,
            media_type=document.content_type,
            headers={
                "content-disposition": f'attachment; filename="{invoice_id}.{document_format}"'
            },
        )

    async def portal_quote(self, request: Request) -> Response:
        """The price calculator: a quote on the customer's own contract, nothing debited."""
        token = request.path_params["token"]
        form = await request.form()
        product_key = str(form.get("product_key", ""))
        quantity = str(form.get("quantity", ""))
        try:
            quote = await self.gateway.call(
                self.gateway.portal.PortalQuote,
                portal_pb2.PortalQuoteRequest(
                    lines=[catalog_pb2.UsageLine(product_key=product_key, quantity=quantity)]
                ),
                Credential.portal_link(token),
            )
        except RatingError as error:
            return self.render(
                "quote.html",
                400 if error.code != grpc.StatusCode.UNAUTHENTICATED else 401,
                error=error.message,
                fields=error.fields,
            )
        return self.render("quote.html", quote=quote.quote)

    async def _portal_reads(
        self, token: str, *, invoices: bool = True
    ) -> tuple[portal_pb2.GetPortalAccountResponse, portal_pb2.ListPortalInvoicesResponse]:
        credential = Credential.portal_link(token)
        account = await self.gateway.call(
            self.gateway.portal.GetPortalAccount, portal_pb2.GetPortalAccountRequest(), credential
        )
        listed = portal_pb2.ListPortalInvoicesResponse()
        if invoices:
            listed = await self.gateway.call(
                self.gateway.portal.ListPortalInvoices,
                portal_pb2.ListPortalInvoicesRequest(page_size=20),
                credential,
            )
        return account, listed

    def _portal_refused(self, error: RatingError) -> HTMLResponse:
        if error.reason == "PORTAL_LINK_EXPIRED":
            title = "This link has expired"
        elif error.code == grpc.StatusCode.UNAUTHENTICATED:
            title = "This link is not valid"
        else:
            return self.refused(error, title="The portal could not be shown")
        return self.render(
            "refused.html", 401, title=title, reason=error.reason, message=error.message
        )

    # The operator pages.

    async def home(self, request: Request) -> Response:
        """The front page: how to open each part."""
        return self.render("home.html", operator=self._operator(request))

    async def login_form(self, request: Request) -> Response:
        """The sign-in form."""
        return self.render("login.html")

    async def login(self, request: Request) -> Response:
        """Check the API key with WhoAmI; a session for it, whatever its role."""
        form = await request.form()
        key = str(form.get("api_key", "")).strip()
        credential = Credential.api_key(key)
        try:
            who = await self.gateway.call(
                self.gateway.admin.WhoAmI, admin_pb2.WhoAmIRequest(), credential
            )
        except RatingError as error:
            return self.render("login.html", 401, error=error.message)
        session_id = secrets.token_urlsafe(32)
        self._forget_expired()
        self.sessions[session_id] = OperatorSession(
            credential,
            who.tenant.tenant_id,
            who.key.key_id,
            ROLE_NAMES.get(who.key.role, "unknown"),
            time.monotonic() + SESSION_SECONDS,
        )
        response = RedirectResponse("/ops", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",  # the operator's forms are posted from these pages alone
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """Forget the session."""
        self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def ops_home(self, request: Request) -> Response:
        """The operator's overview: live rates, errors and latency from the server's metrics."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        if operator.role not in OPERATOR_ROLES:
            return self._role_refused(operator)
        return self.render(
            "ops_home.html",
            operator=operator,
            metrics=await self.metrics.read(),
            temporal_ui_url=self.config.temporal_ui_url,
        )

    async def ops_metrics(self, request: Request) -> Response:
        """The live metrics fragment."""
        operator = self._operator(request)
        if operator is None or operator.role not in OPERATOR_ROLES:
            return HTMLResponse("", status_code=403)
        return self.render("ops_metrics.html", metrics=await self.metrics.read())

    async def customers(self, request: Request) -> Response:
        """Customers, a page at a time, each with its contracts."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        if operator.role not in OPERATOR_ROLES:
            return self._role_refused(operator)
        try:
            listed = await self.gateway.call(
                self.gateway.contracts.ListCustomers,
                contract_pb2.ListCustomersRequest(
                    page_size=50, page_token=request.query_params.get("page", "")
                ),
                operator.credential,
            )
        except RatingError as error:
            return self.refused(error, title="Customers could not be listed")
        return self.render(
            "customers.html",
            operator=operator,
            customers=listed.customers,
            next_page=listed.next_page_token,
        )

    async def customer(self, request: Request) -> Response:
        """One customer: contracts, pools, and a button that opens their portal."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        if operator.role not in OPERATOR_ROLES:
            return self._role_refused(operator)
        customer_id = request.path_params["customer_id"]
        try:
            customer = await self.gateway.call(
                self.gateway.contracts.GetCustomer,
                contract_pb2.GetCustomerRequest(customer_id=customer_id),
                operator.credential,
            )
            contracts = await self.gateway.call(
                self.gateway.contracts.ListContracts,
                contract_pb2.ListContractsRequest(customer_id=customer_id, page_size=50),
                operator.credential,
            )
        except RatingError as error:
            return self.refused(error, title="The customer could not be shown")
        balances: rating_pb2.GetBalancesResponse | None = None
        try:
            balances = await self.gateway.call(
                self.gateway.rating.GetBalances,
                rating_pb2.GetBalancesRequest(customer_id=customer_id),
                operator.credential,
            )
        except RatingError:
            balances = None  # no contract in force now: nothing to draw from
        return self.render(
            "customer.html",
            operator=operator,
            customer=customer.customer,
            contracts=contracts.contracts,
            balances=balances,
        )

    async def customer_portal_link(self, request: Request) -> Response:
        """Open a portal link for the customer (CreatePortalSession) and show it."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        customer_id = request.path_params["customer_id"]
        try:
            link = await self.gateway.call(
                self.gateway.portal.CreatePortalSession,
                portal_pb2.CreatePortalSessionRequest(customer_id=customer_id),
                operator.credential,
            )
        except RatingError as error:
            return self.refused(error, title="No portal link")
        return self.render(
            "portal_link.html",
            operator=operator,
            customer_id=customer_id,
            url=link.url or f"/portal/{link.token}",
            expires=link.expire_time.ToDatetime(UTC),
        )

    async def failed_invoices(self, request: Request) -> Response:
        """Failed invoice workflows: the step, the reason, and a way to replay each."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        if operator.role not in OPERATOR_ROLES:
            return self._role_refused(operator)
        try:
            failed = await self.gateway.call(
                self.gateway.ops.ListFailedInvoices,
                ops_pb2.ListFailedInvoicesRequest(limit=100),
                operator.credential,
            )
            replays = await self.gateway.call(
                self.gateway.ops.ListReplays,
                ops_pb2.ListReplaysRequest(limit=20),
                operator.credential,
            )
        except RatingError as error:
            return self.refused(error, title="Failed invoices could not be listed")
        return self.render(
            "failed_invoices.html",
            operator=operator,
            runs=failed.runs,
            replays=replays.replays,
            temporal=self._temporal_link,
        )

    async def invoice_run(self, request: Request) -> Response:
        """One invoice workflow's latest run, step by step, and its replays."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        if operator.role not in OPERATOR_ROLES:
            return self._role_refused(operator)
        workflow_id = request.query_params.get("workflow_id", "")
        try:
            found = await self.gateway.call(
                self.gateway.ops.GetInvoiceRun,
                ops_pb2.GetInvoiceRunRequest(workflow_id=workflow_id),
                operator.credential,
            )
        except RatingError as error:
            return self.refused(error, title="The invoice run could not be shown")
        return self.render(
            "invoice_run.html",
            operator=operator,
            run=found.run,
            replays=found.replays,
            temporal=self._temporal_link,
        )

    async def replay(self, request: Request) -> Response:
        """Plan (dry run) or make a replay of one invoice workflow; the API logs who and why."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        if operator.role not in OPERATOR_ROLES:
            return self._role_refused(operator)
        form = await request.form()
        workflow_id = str(form.get("workflow_id", ""))
        reason = str(form.get("reason", "")).strip()
        dry_run = form.get("dry_run") == "1"
        try:
            answer = await self.gateway.call(
                self.gateway.ops.ReplayInvoices,
                ops_pb2.ReplayInvoicesRequest(
                    workflow_ids=[workflow_id],
                    reason=reason,
                    dry_run=dry_run,
                    reset_to=str(form.get("reset_to", "")),
                    wait_seconds=0 if dry_run else 60,
                ),
                operator.credential,
                timeout_seconds=90,
            )
        except RatingError as error:
            return self.render(
                "replay.html",
                400 if error.code == grpc.StatusCode.INVALID_ARGUMENT else 502,
                operator=operator,
                workflow_id=workflow_id,
                error=error.message,
                fields=error.fields,
            )
        return self.render(
            "replay.html",
            operator=operator,
            workflow_id=workflow_id,
            dry_run=dry_run,
            reason=reason,
            plans=answer.plans,
            replays=answer.replays,
            temporal=self._temporal_link,
        )

    async def reconcile(self, request: Request) -> Response:
        """Rebuild the tenant's accounts from their transfers (ReconcileLedger) and show drift."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        if operator.role not in OPERATOR_ROLES:
            return self._role_refused(operator)
        try:
            report = await self.gateway.call(
                self.gateway.ops.ReconcileLedger,
                ops_pb2.ReconcileLedgerRequest(),
                operator.credential,
                timeout_seconds=120,
            )
        except RatingError as error:
            return self.refused(error, title="The ledger could not be reconciled")
        return self.render("reconcile.html", operator=operator, report=report)

    async def webhooks(self, request: Request) -> Response:
        """Webhook deliveries, latest first, each redeliverable."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        if operator.role not in OPERATOR_ROLES:
            return self._role_refused(operator)
        try:
            deliveries = await self.gateway.call(
                self.gateway.webhooks.ListWebhookDeliveries,
                webhook_pb2.ListWebhookDeliveriesRequest(limit=100),
                operator.credential,
            )
        except RatingError as error:
            return self.refused(error, title="Webhook deliveries could not be listed")
        return self.render(
            "webhooks.html",
            operator=operator,
            deliveries=deliveries.deliveries,
            redelivered=request.query_params.get("redelivered", ""),
        )

    async def redeliver(self, request: Request) -> Response:
        """Send one notification to its endpoint again (RedeliverWebhook, once per request)."""
        operator = self._operator(request)
        if operator is None:
            return RedirectResponse("/ops/login", status_code=303)
        form = await request.form()
        try:
            answer = await self.gateway.call(
                self.gateway.webhooks.RedeliverWebhook,
                webhook_pb2.RedeliverWebhookRequest(
                    event_id=str(form.get("event_id", "")),
                    endpoint_id=str(form.get("endpoint_id", "")),
                    request_id=str(form.get("request_id", "")) or str(uuid.uuid4()),
                ),
                operator.credential,
            )
        except RatingError as error:
            return self.refused(error, title="Not redelivered")
        return RedirectResponse(f"/ops/webhooks?redelivered={answer.workflow_id}", status_code=303)

    def _operator(self, request: Request) -> OperatorSession | None:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is None or session.expires_at < time.monotonic():
            return None
        return session

    def _role_refused(self, operator: OperatorSession) -> HTMLResponse:
        return self.render(
            "refused.html",
            403,
            title="This key opens no operator page",
            reason="ROLE_NOT_ALLOWED",
            message=f"the key {operator.key_id} has the {operator.role} role; the operator pages"
            " need an ops or admin key",
            operator=operator,
        )

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for session_id in [s for s, v in self.sessions.items() if v.expires_at < now]:
            del self.sessions[session_id]

    def _temporal_link(self, workflow_id: str, run_id: str = "") -> str:
        if not self.config.temporal_ui_url:
            return ""
        base = self.config.temporal_ui_url.rstrip("/")
        link = f"{base}/namespaces/{self.config.temporal_namespace}/workflows/{workflow_id}"
        return f"{link}/{run_id}/history" if run_id else link


def build_app(config: ConsoleConfig) -> Starlette:
    """The console as an ASGI application."""
    console = Console(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await console.gateway.close()
        await console.metrics.close()

    routes = [
        Route("/", console.home),
        Route("/portal/{token}", console.portal),
        Route("/portal/{token}/live", console.portal_live),
        Route("/portal/{token}/quote", console.portal_quote, methods=["POST"]),
        Route(
            "/portal/{token}/invoices/{invoice_id}.{format:str}",
            console.portal_document,
        ),
        Route("/ops/login", console.login_form, methods=["GET"]),
        Route("/ops/login", console.login, methods=["POST"]),
        Route("/ops/logout", console.logout, methods=["POST"]),
        Route("/ops", console.ops_home),
        Route("/ops/metrics", console.ops_metrics),
        Route("/ops/customers", console.customers),
        Route("/ops/customers/{customer_id}", console.customer),
        Route(
            "/ops/customers/{customer_id}/portal-link",
            console.customer_portal_link,
            methods=["POST"],
        ),
        Route("/ops/invoices/failed", console.failed_invoices),
        Route("/ops/invoices/run", console.invoice_run),
        Route("/ops/invoices/replay", console.replay, methods=["POST"]),
        Route("/ops/reconcile", console.reconcile, methods=["POST"]),
        Route("/ops/webhooks", console.webhooks),
        Route("/ops/webhooks/redeliver", console.redeliver, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(PageHeaders)])
    app.state.console = console
    return app


PAGE_HEADERS = [
    # A portal page's URL is its credential: never sent on to another site, never cached.
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]


class PageHeaders:
    """Every answer's safety headers, and `Server-Timing`: how long it took here, RPCs included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers = [*message.get("headers", []), *PAGE_HEADERS]
                headers.append((b"server-timing", f"app;dur={elapsed_ms:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)


def _portal_view(account: portal_pb2.GetPortalAccountResponse) -> dict[str, Any]:
    """What the portal templates show: the account and its charts."""
    now = datetime.now(UTC)
    currency = account.balances.invoice_currency
    pools = []
    for pool in account.balances.pools:
        expires = pool.expire_time.ToDatetime(UTC) if pool.HasField("expire_time") else None
        pools.append(
            {
                "pool": pool,
                "expires": expires,
                "chart": Markup(
                    charts.burn_down(
                        f"Pool {pool.pool_id}: {pool.remaining} of {pool.original} left",
                        _decimal(pool.original),
                        _decimal(pool.remaining),
                        pool.start_time.ToDatetime(UTC),
                        now,
                        expires,
                    )
                ),
            }
        )
    usage = account.usage
    usage_chart = charts.bars(
        "Usage this period by product: amount so far and forecast to the period end",
        [
            charts.Bar(
                row.product_key + "".join(f" {v}" for v in row.dimensions.values()),
                _decimal(row.amount),
                _decimal(row.forecast_amount),
            )
            for row in usage.rows
        ],
    )
    daily_chart = charts.bars(
        "Spend per day this period",
        [charts.Bar(day.day, _decimal(day.amount)) for day in account.daily_spend],
    )
    contract = account.contract
    cap = _decimal(contract.spend_cap) if contract.HasField("spend_cap") else None
    marks = [
        cap * _decimal(t.percent) / 100
        for t in contract.alert_thresholds
        if cap is not None and t.HasField("percent")
    ]
    spend_chart = (
        charts.meter(
            f"Spend this period {usage.total} of a {contract.spend_cap} cap",
            _decimal(usage.total),
            cap,
            marks,
        )
        if cap is not None
        else ""
    )
    return {
        "customer": account.customer,
        "contract": contract,
        "balances": account.balances,
        "currency": currency,
        "pools": pools,
        "usage": usage,
        "usage_chart": Markup(usage_chart),
        "daily_spend": account.daily_spend,
        "daily_chart": Markup(daily_chart),
        "spend_cap": cap,
        "spend_chart": Markup(spend_chart),
        "period_start": usage.period_start.ToDatetime(UTC),
        "period_end": usage.period_end.ToDatetime(UTC),
    }


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text or "0")
    except InvalidOperation:
        return Decimal(0)


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if hasattr(value, "ToDatetime"):
        return _when(value.ToDatetime(UTC)) if value.seconds or value.nanos else "—"
    return str(value)


def _money(value: str) -> str:
    """A decimal string as sent, trailing zeros kept: the console never re-rounds money."""
    return value or "0"


def _estimate(value: str) -> str:
    """A forecast, an estimate kept exact by the API, shown to the cent with an ≈."""
    try:
        rounded = Decimal(value or "0").quantize(Decimal("0.01"), ROUND_HALF_UP)
    except InvalidOperation:
        return value
    return f"≈ {rounded}"
