"""The API documentation page (X1 §9.1: "Beschikbaar stellen van REST API-documentatie"),
rendered on the gateway from the same OpenAPI 3.1 document that ``/api/openapi.json``
serves: every route grouped by tag, with its parameters, request body, responses (the
JSON error codes of x1-api.md), the WebSocket messages and close codes, and the schemas.

No third-party viewer: the document is walked here and written as plain, accessible
HTML (headings, tables, links to the schemas).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from x1p1.gateway.portal.html import esc
from x1p1.gateway.portal.i18n import Texts

_METHODS = ("get", "post", "put", "patch", "delete")


def _anchor(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _prose(text: object) -> str:
    """Escaped text with `code` spans (the document writes code in backquotes)."""
    escaped = esc(text or "")
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _resolve(document: Mapping[str, Any], node: Any) -> Any:
    """Follow a ``$ref`` to ``#/components/...`` (one level: responses refer to schemas)."""
    if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        target: Any = document
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return target
    return node


def schema_text(schema: Any) -> str:
    """A schema as a short HTML phrase: ``string``, ``array of <a>Profile</a>``,
    ``string: one of pending, approved``, ``integer ≥ 1``."""
    if not isinstance(schema, Mapping):
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = _ref_name(ref)
        return f'<a href="#schema-{esc(_anchor(name))}">{esc(name)}</a>'
    if "allOf" in schema and "type" not in schema:
        return " + ".join(schema_text(part) for part in schema["allOf"])
    kind = schema.get("type", "")
    if isinstance(kind, list):
        kind = " | ".join(map(str, kind))
    text = esc(kind) if kind else "any"
    if kind == "array":
        text = "array of " + (schema_text(schema.get("items")) or "any")
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        text = "object of " + schema_text(schema["additionalProperties"])
    if "enum" in schema:
        text += ": " + ", ".join(f"<code>{esc(v)}</code>" for v in schema["enum"])
    if "pattern" in schema:
        text += f" (pattern <code>{esc(schema['pattern'])}</code>)"
    if "format" in schema:
        text += f" ({esc(schema['format'])})"
    bounds = []
    for key, sign in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
    ):
        if key in schema:
            bounds.append(f"{sign} {esc(schema[key])}")
    if bounds:
        text += " " + ", ".join(bounds)
    return text


def _first_schema(content: Mapping[str, Any]) -> Any:
    for media in content.values():
        if isinstance(media, Mapping):
            return media.get("schema")
    return None


def _table(caption: str, head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    th = "".join(f'<th scope="col">{esc(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<div class="table-scroll" role="region" tabindex="0" aria-label="{esc(caption)}">'
        f'<table><caption class="visually-hidden">{esc(caption)}</caption><thead><tr>{th}'
        f"</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _operation(
    document: Mapping[str, Any], method: str, path: str, op: Mapping[str, Any], t: Texts
) -> str:
    op_id = str(op.get("operationId") or f"{method}-{path}")
    websocket = "x-websocket" in op
    verb = "WSS" if websocket else method.upper()
    schemes = {name for requirement in op.get("security") or [] for name in requirement}
    auth = " · ".join(
        t("api.auth") if name == "bearer" else t("api.session") for name in sorted(schemes)
    ) or t("api.noauth")
    parts = [
        f'<article class="operation" id="op-{esc(_anchor(op_id))}">'
        f'<h3><span class="verb verb-{esc(method)}">{esc(verb)}</span> '
        f"<code>{esc(path)}</code></h3>",
        f'<p class="summary">{_prose(op.get("summary", ""))}</p>',
        f"<p>{_prose(op.get('description', ''))}</p>",
        f'<p class="hint">{esc(auth)}</p>',
    ]
    params = []
    for param in op.get("parameters", []):
        param = _resolve(document, param)
        params.append(
            [
                f"<code>{esc(param.get('name', ''))}</code>",
                esc(param.get("in", "")),
                esc(t("api.yes") if param.get("required") else t("api.no")),
                schema_text(param.get("schema")),
                _prose(param.get("description", "")),
            ]
        )
    if params:
        parts.append(f"<h4>{esc(t('api.parameters'))}</h4>")
        parts.append(
            _table(
                f"{op_id}: {t('api.parameters')}",
                [
                    t("api.name"),
                    t("api.in"),
                    t("api.required"),
                    t("api.type"),
                    t("api.description"),
                ],
                params,
            )
        )
    body = op.get("requestBody")
    if isinstance(body, Mapping):
        content: Mapping[str, Any] = body.get("content") or {}
        schema = _first_schema(content)
        parts.append(
            f"<h4>{esc(t('api.body'))}</h4><p>{esc(', '.join(content))}: "
            f"{schema_text(schema)}. {_prose(body.get('description', ''))}</p>"
        )
    responses = []
    for status, response in op.get("responses", {}).items():
        response = _resolve(document, response)
        content = (response.get("content") or {}) if isinstance(response, Mapping) else {}
        schema = _first_schema(content)
        responses.append(
            [
                f"<code>{esc(status)}</code>",
                _prose(response.get("description", "")),
                schema_text(schema),
            ]
        )
    if responses:
        parts.append(f"<h4>{esc(t('api.responses'))}</h4>")
        parts.append(
            _table(
                f"{op_id}: {t('api.responses')}",
                [t("api.status"), t("api.description"), t("api.type")],
                responses,
            )
        )
    ws = op.get("x-websocket")
    if isinstance(ws, Mapping):
        parts.append(
            f"<h4>{esc(t('api.messages'))}</h4><p>{schema_text(ws.get('messages'))} "
            f"{_prose(ws.get('messages', {}).get('description', ''))}</p>"
        )
        closes = [
            [f"<code>{esc(code)}</code>", _prose(text)]
            for code, text in ws.get("close-codes", {}).items()
        ]
        parts.append(f"<h4>{esc(t('api.closes'))}</h4>")
        parts.append(
            _table(f"{op_id}: {t('api.closes')}", [t("api.code"), t("api.description")], closes)
        )
    parts.append("</article>")
    return "".join(parts)


def render(document: Mapping[str, Any], t: Texts) -> str:
    """The page's ``<main>``: title, contents, operations by tag, schemas."""
    groups: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if isinstance(op, Mapping):
                tag = (op.get("tags") or ["other"])[0]
                groups.setdefault(str(tag), []).append((method, path, op))
    info = document.get("info", {})
    link = '<a href="/api/openapi.json"><code>/api/openapi.json</code></a>'
    intro = esc(t("api.intro", link="\x00")).replace("\x00", link)
    contents = []
    sections = []
    for tag, ops in groups.items():
        entries = "".join(
            f'<li><a href="#op-{esc(_anchor(str(op.get("operationId") or path)))}">'
            f"{esc('WSS' if 'x-websocket' in op else method.upper())} <code>{esc(path)}</code>"
            f"</a> — {_prose(op.get('summary', ''))}</li>"
            for method, path, op in ops
        )
        contents.append(
            f'<li><a href="#tag-{esc(_anchor(tag))}">{esc(tag)}</a><ul>{entries}</ul></li>'
        )
        sections.append(
            f'<section aria-labelledby="tag-{esc(_anchor(tag))}">'
            f'<h2 id="tag-{esc(_anchor(tag))}">{esc(tag)}</h2>'
            + "".join(_operation(document, m, p, op, t) for m, p, op in ops)
            + "</section>"
        )
    schemas = []
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        required = set(schema.get("required", []))
        rows = [
            [
                f"<code>{esc(field)}</code>",
                esc(t("api.yes") if field in required else t("api.no")),
                schema_text(prop),
                _prose(prop.get("description", "")),
            ]
            for field, prop in schema.get("properties", {}).items()
        ]
        summary = _prose(schema.get("description", "")) or schema_text(schema)
        schemas.append(
            f'<article class="schema" id="schema-{esc(_anchor(name))}"><h3>{esc(name)}</h3>'
            f"<p>{summary}</p>"
            + _table(
                f"{name}",
                [t("api.field"), t("api.required"), t("api.type"), t("api.description")],
                rows,
            )
            + "</article>"
        )
    return "".join(
        [
            f"<h1>{esc(t('api.title'))}</h1>",
            f"<p>{intro}</p>",
            f'<p class="hint">{esc(info.get("title", ""))} {esc(info.get("version", ""))}. '
            f"{_prose(info.get('description', ''))}</p>",
            f'<nav aria-labelledby="api-contents-h" class="contents"><h2 id="api-contents-h">'
            f"{esc(t('api.contents'))}</h2><ul>{''.join(contents)}"
            f'<li><a href="#schemas">{esc(t("api.schemas"))}</a></li></ul></nav>',
            *sections,
            f'<section aria-labelledby="schemas"><h2 id="schemas">{esc(t("api.schemas"))}</h2>'
            f"{''.join(schemas)}</section>",
        ]
    )
