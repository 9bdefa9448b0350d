"""One sender per channel kind: the shape of the message on the wire, nothing about retries.

``send(delivery)`` returns an :class:`Outcome` (the receiver took it) or raises
:class:`SendError` (with the answer's status and body when there was one, and whether a retry
can help). Every HTTP call goes through :func:`agentflow.lib.http.request`; no message, error or
kept body holds the channel's secret.

- email: Django's ``send_mail`` to the channel's recipients (EMAIL_BACKEND decides how).
- slack: an incoming webhook (the secret is its URL): ``{"text", "blocks"}``.
- webhook: Standard Webhooks: ``webhook-id`` (the delivery's, the same on every retry),
  ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``,
  signed here with ``hmac`` (the standard library: no runtime dependency for ten lines; the tests
  verify with the ``standardwebhooks`` package).
- github: REST v3: a thread's first event opens an issue, later ones comment on it, a closing
  event (``notify.CLOSING``) comments and closes it; the issue number per (channel, thread) is a
  ``ChannelThread``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from agentflow.lib import http
from scheduler import notify

from .models import RESPONSE_MAX_CHARS, Channel, ChannelThread, Delivery, Notification

# Answers worth retrying: the receiver's trouble, not ours (a 4xx otherwise means the request
# itself is wrong: a bad URL, a revoked token; sending it again cannot help).
RETRY_STATUSES = frozenset({408, 409, 425, 429})


class SendError(Exception):
    """The receiver did not take it. ``status``/``body``: its answer, if any; ``retry``: whether
    another attempt can help."""

    def __init__(
        self, message: str, *, status: int | None = None, body: str = "", retry: bool = True
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.body, self.retry = message, status, body, retry


@dataclass(frozen=True)
class Outcome:
    status: int | None = None
    body: str = ""
    note: str = ""


def retryable(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUSES


def send(delivery: Delivery) -> Outcome:
    sender = SENDERS[delivery.channel.kind]
    return sender(delivery.channel, delivery.notification, delivery)


def absolute(link: str) -> str:
    if link.startswith("/") and settings.AGENTFLOW_PUBLIC_URL:
        return settings.AGENTFLOW_PUBLIC_URL.rstrip("/") + link
    return link


def _plain(n: Notification) -> str:
    lines = [n.subject, "", n.text] if n.text else [n.subject]
    if n.link:
        lines += ["", absolute(n.link)]
    lines += ["", f"{n.label} · level {n.level} · {n.created_at:%Y-%m-%d %H:%M:%S} UTC"]
    return "\n".join(lines).strip()


def _call(
    channel: Channel,
    method: str,
    url: str,
    payload: Any,
    headers: dict[str, str] | None = None,
    *,
    raw: bytes | None = None,
) -> http.Response:
    """One HTTP call of a sender: an answer other than 2xx is a :class:`SendError`."""
    body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
    try:
        answer = http.request(
            method,
            url,
            body=body,
            headers={**({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})},
            timeout=settings.AGENTFLOW_NOTIFY_TIMEOUT_SECONDS,
            secrets=[channel.secret],
        )
    except http.HttpError as exc:
        raise SendError(str(exc)) from None
    if not answer.ok:
        text = http.scrub(answer.text(RESPONSE_MAX_CHARS), [channel.secret])
        detail = _detail(text)
        raise SendError(
            f"{method} {http.redact(url)}: HTTP {answer.status}" + (f" ({detail})" if detail else ""),
            status=answer.status,
            body=text,
            retry=retryable(answer.status),
        )
    return answer


def _detail(text: str) -> str:
    """The short reason of an error answer: GitHub's ``message``, Slack's plain-text code."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip()[:120] if len(text.strip()) <= 120 else ""
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed.get("error") or "")[:200]
    return ""


def _outcome(channel: Channel, answer: http.Response, note: str = "") -> Outcome:
    return Outcome(answer.status, http.scrub(answer.text(RESPONSE_MAX_CHARS), [channel.secret]), note)


# --- email -------------------------------------------------------------------------------------


def send_email(channel: Channel, n: Notification, delivery: Delivery) -> Outcome:
    recipients = channel.recipient_list
    if not recipients:
        raise SendError("the channel has no recipients", retry=False)
    try:
        sent = send_mail(f"[AgentFlow] {n.subject}", _plain(n), None, recipients, fail_silently=False)
    except Exception as exc:  # SMTP and socket errors: the server's trouble, retried
        raise SendError(http.scrub(f"email: {type(exc).__name__}: {exc}"[:500], [channel.secret])) from None
    return Outcome(
        None, "", f"sent to {len(recipients)} recipient(s)" if sent else "the backend sent nothing"
    )


# --- Slack -------------------------------------------------------------------------------------

LEVEL_EMOJI = {
    "info": ":information_source:",
    "warning": ":warning:",
    "error": ":x:",
    "critical": ":rotating_light:",
}


def slack_payload(n: Notification) -> dict[str, Any]:
    link = absolute(n.link)
    fallback = f"{n.subject}" + (f" — {link}" if link else "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": n.subject[:150], "emoji": True}},
    ]
    if n.text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": n.text[:2900]}})
    context = f"{LEVEL_EMOJI.get(n.level, '')} {n.label} · {n.level}"
    if link.startswith(("http://", "https://")):
        context += f" · <{link}|open in AgentFlow>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context.strip()}]})
    return {"text": fallback, "blocks": blocks}


def send_slack(channel: Channel, n: Notification, delivery: Delivery) -> Outcome:
    return _outcome(channel, _call(channel, "POST", channel.secret, slack_payload(n)))


# --- Standard Webhooks -------------------------------------------------------------------------


def webhook_body(n: Notification) -> bytes:
    payload = {
        "type": n.kind,
        "timestamp": n.created_at.isoformat(),
        "data": {
            "id": n.pk,
            "subject": n.subject,
            "text": n.text,
            "level": n.level,
            "thread": n.thread,
            "link": absolute(n.link),
            "data": n.data,
        },
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with the decoded ``whsec_`` key."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def send_webhook(channel: Channel, n: Notification, delivery: Delivery) -> Outcome:
    if not channel.secret:
        raise SendError("the channel has no signing secret", retry=False)
    body = webhook_body(n)
    timestamp = int(time.time())  # per attempt: receivers refuse a timestamp over ~5 minutes old
    headers = {
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(channel.secret, delivery.webhook_id, timestamp, body),
    }
    return _outcome(channel, _call(channel, "POST", channel.url, None, headers, raw=body))


# --- GitHub issues -----------------------------------------------------------------------------


def _github(channel: Channel, method: str, path: str, payload: Any) -> http.Response:
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "Authorization": f"Bearer {channel.secret}",
    }
    repo = channel.repository.strip().strip("/")
    return _call(channel, method, f"{channel.api_url.rstrip('/')}/repos/{repo}{path}", payload, headers)


def _json(answer: http.Response) -> dict[str, Any]:
    try:
        parsed = json.loads(answer.body or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def issue_body(n: Notification) -> str:
    lines = [n.text or n.subject, ""]
    if n.link:
        lines.append(f"- Page: {absolute(n.link)}")
    lines += [
        f"- Event: {n.label} (`{n.kind}`), level {n.level}",
        f"- At: {n.created_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if n.thread:
        lines += ["", f"<sub>AgentFlow thread `{n.thread}`: later events comment here.</sub>"]
    return "\n".join(lines)


def send_github(channel: Channel, n: Notification, delivery: Delivery) -> Outcome:
    if not channel.secret:
        raise SendError("the channel has no token", retry=False)
    closing = n.kind in notify.CLOSING or n.kind == notify.TEST
    thread = ChannelThread.objects.filter(channel=channel, thread=n.thread).first() if n.thread else None
    if thread is None or thread.state == "closed":
        if n.kind in notify.CLOSING:
            return Outcome(None, "", f"no open issue for thread {n.thread or '(none)'}: nothing to close")
        answer = _github(
            channel, "POST", "/issues", {"title": f"AgentFlow: {n.subject}"[:250], "body": issue_body(n)}
        )
        issue = _json(answer)
        number = int(issue.get("number") or 0)
        if not number:
            raise SendError("GitHub answered without an issue number", status=answer.status, retry=False)
        if n.thread:
            ChannelThread.objects.update_or_create(
                channel=channel,
                thread=n.thread,
                defaults={
                    "issue_number": number,
                    "issue_url": str(issue.get("html_url") or "")[:300],
                    "state": "open",
                },
            )
        note = f"opened issue #{number}"
        if n.kind == notify.TEST:  # a test leaves no open issue behind
            answer = _close(channel, number, None)
            note += " and closed it (a test)"
        return _outcome(channel, answer, note)
    comment = f"**{n.label}**: {n.subject}\n\n{issue_body(n)}"
    answer = _github(channel, "POST", f"/issues/{thread.issue_number}/comments", {"body": comment})
    note = f"commented on issue #{thread.issue_number}"
    if closing:
        answer = _close(channel, thread.issue_number, thread)
        note += " and closed it"
    return _outcome(channel, answer, note)


def _close(channel: Channel, number: int, thread: ChannelThread | None) -> http.Response:
    answer = _github(channel, "PATCH", f"/issues/{number}", {"state": "closed", "state_reason": "completed"})
    if thread is not None:
        ChannelThread.objects.filter(pk=thread.pk).update(state="closed")
    return answer


def issue_state(channel: Channel, thread: ChannelThread) -> str:
    """The thread's issue state as GitHub says now (an operator closing it is a signal)."""
    answer = _github(channel, "GET", f"/issues/{thread.issue_number}", None)
    state = str(_json(answer).get("state") or "")[:10]
    if state and state != thread.state:
        ChannelThread.objects.filter(pk=thread.pk).update(state=state)
    return state


SENDERS: dict[str, Callable[[Channel, Notification, Delivery], Outcome]] = {
    Channel.Kind.EMAIL: send_email,
    Channel.Kind.SLACK: send_slack,
    Channel.Kind.WEBHOOK: send_webhook,
    Channel.Kind.GITHUB: send_github,
}
