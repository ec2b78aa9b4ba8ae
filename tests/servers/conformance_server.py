"""The MCP conformance suite's reference server, over stdio (MCP Python SDK 2.x).

Implements what the server scenarios of npm ``@modelcontextprotocol/conformance`` check (their
"Server Implementation Requirements"), with the suite's standard names:

Tools      test_simple_text, test_image_content, test_audio_content, test_embedded_resource,
           test_multiple_content_types, test_tool_with_logging, test_tool_with_progress,
           test_error_handling, test_sampling(prompt), test_elicitation(message),
           test_elicitation_sep1034_defaults, test_elicitation_sep1330_enums,
           json_schema_2020_12_tool (a JSON Schema 2020-12 inputSchema, kept verbatim),
           test_reconnection (the SSE-polling tool; over stdio it can only answer)
2026-07-28 test_input_required_result_{elicitation,sampling,list_roots,request_state,multiple_inputs,
           multi_round,tampered_state,capabilities} and prompt test_input_required_result_prompt
           (InputRequiredResult rounds, SEP-2322); the stateless scenario's hooks test_missing_capability
           (-32021 without sampling), test_streaming_elicitation, test_logging_tool,
           test_trigger_tool_change, test_trigger_prompt_change; test_custom_headers(region, priority), whose
           arguments carry x-mcp-header annotations (SEP-2243: clients mirror them into Mcp-Param-* headers)
Resources  test://static-text, test://static-binary, template test://template/{id}/data,
           test://watched-resource (subscribable: resources/subscribe, resources/unsubscribe)
Prompts    test_simple_prompt, test_prompt_with_arguments(arg1, arg2),
           test_prompt_with_embedded_resource(resourceUri), test_prompt_with_image
Other      logging/setLevel (filters the tools' log notifications), completion/complete

``tests/test_conformance.py`` puts it behind ``supergateway --stateful`` (stdio -> Streamable HTTP),
alone and behind ``regoguard run``. Run: ``python tests/servers/conformance_server.py``.
"""

from __future__ import annotations

import base64
import json
import struct
import warnings
import zlib
from typing import Annotated, Any

import anyio
from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, MCPServer, Resolve, Sample
from mcp.server.mcpserver.prompts.base import Message, Prompt, UserMessage
from mcp.server.mcpserver.resources import BinaryResource, TextResource
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field

# Sampling, elicitation-by-request and logging are deprecated in the 2026-07-28 spec; keep stderr quiet.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)


def _png_1x1_red() -> bytes:
    """A valid 1x1 red PNG, built here rather than pasted as an opaque blob."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _wav_silence(samples: int = 800, rate: int = 8000) -> bytes:
    """A valid mono 8-bit PCM WAV of ``samples`` samples of silence (0.1 s by default)."""
    data = b"\x80" * samples
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


PNG = _png_1x1_red()
PNG_B64 = base64.b64encode(PNG).decode("ascii")
WAV_B64 = base64.b64encode(_wav_silence()).decode("ascii")

LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
WATCHED_URI = "test://watched-resource"

JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}

SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Untitled single-select enum",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Titled single-select enum",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Legacy titled enum (enumNames, deprecated)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Untitled multi-select enum",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Titled multi-select enum",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}

mcp = MCPServer("regoguard-conformance-server", version="1.0.0", log_level="WARNING")

# One client per process (supergateway --stateful starts one child per HTTP session).
_state: dict[str, Any] = {"log_level": "debug", "subscriptions": set()}


async def _log(ctx: Context, level: str, message: str) -> None:
    """A notifications/message, unless logging/setLevel asked for less."""
    if LOG_LEVELS.index(level) >= LOG_LEVELS.index(_state["log_level"]):
        await ctx.log(level, message, logger_name="conformance")  # type: ignore[arg-type]


# ---- tools: content types -----------------------------------------------------------


@mcp.tool(description="Returns simple text content.")
def test_simple_text() -> CallToolResult:
    return CallToolResult(content=[TextContent(text="This is a simple text response for testing.")])


@mcp.tool(description="Returns image content (a base64 1x1 PNG).")
def test_image_content() -> CallToolResult:
    return CallToolResult(content=[ImageContent(data=PNG_B64, mime_type="image/png")])


@mcp.tool(description="Returns audio content (a base64 WAV).")
def test_audio_content() -> CallToolResult:
    return CallToolResult(content=[AudioContent(data=WAV_B64, mime_type="audio/wav")])


@mcp.tool(description="Returns an embedded text resource.")
def test_embedded_resource() -> CallToolResult:
    resource = TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return CallToolResult(content=[EmbeddedResource(resource=resource)])


@mcp.tool(description="Returns text, image and embedded resource content together.")
def test_multiple_content_types() -> CallToolResult:
    resource = TextResourceContents(
        uri="test://mixed-content-resource",
        mime_type="application/json",
        text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
    )
    return CallToolResult(
        content=[
            TextContent(text="Multiple content types test:"),
            ImageContent(data=PNG_B64, mime_type="image/png"),
            EmbeddedResource(resource=resource),
        ]
    )


# ---- tools: notifications and errors ------------------------------------------------


@mcp.tool(description="Sends three info log notifications while it runs.")
async def test_tool_with_logging(ctx: Context) -> CallToolResult:
    await _log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool execution completed")
    return CallToolResult(content=[TextContent(text="Tool with logging executed successfully")])


@mcp.tool(description="Reports progress 0/100, 50/100, 100/100 when the request carries a progressToken.")
async def test_tool_with_progress(ctx: Context) -> CallToolResult:
    for progress in (0, 50, 100):
        await ctx.report_progress(progress, 100, f"Completed step {progress // 50 + 1} of 3")
        if progress < 100:
            await anyio.sleep(0.05)
    return CallToolResult(content=[TextContent(text="Tool with progress executed successfully")])


@mcp.tool(description="Always fails: a tool result with isError: true.")
def test_error_handling() -> CallToolResult:
    return CallToolResult(
        content=[TextContent(text="This tool intentionally returns an error for testing")], is_error=True
    )


@mcp.tool(description="Answers after a short pause (the SSE-polling scenario's tool; stdio has no stream to close).")
async def test_reconnection() -> CallToolResult:
    await anyio.sleep(0.1)
    return CallToolResult(content=[TextContent(text="Reconnection test completed")])


# ---- tools: requests to the client ----------------------------------------------------


def _sampling_request(prompt: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(text=prompt))], max_tokens=100)


@mcp.tool(description="Asks the client's LLM (sampling/createMessage) and returns its answer.")
async def test_sampling(
    prompt: str, reply: Annotated[CreateMessageResult, Resolve(_sampling_request)]
) -> CallToolResult:
    content = reply.content
    text = content.text if isinstance(content, TextContent) else f"<{content.type}>"
    return CallToolResult(content=[TextContent(text=f"LLM response: {text}")])


class UserInfo(BaseModel):
    username: str = Field(description="User's response")
    email: str = Field(description="User's email address")


def _elicitation_request(message: str) -> Elicit[UserInfo]:
    return Elicit(message, UserInfo)


@mcp.tool(description="Asks the user for input (elicitation/create) and returns the answer.")
async def test_elicitation(
    message: str, answer: Annotated[ElicitationResult[UserInfo], Resolve(_elicitation_request)]
) -> CallToolResult:
    data = getattr(answer, "data", None)
    content = data.model_dump() if isinstance(data, BaseModel) else None
    text = f"User response: action={answer.action}, content={json.dumps(content)}"
    return CallToolResult(content=[TextContent(text=text)])


async def _elicit_raw(ctx: Context, message: str, schema: dict[str, Any]) -> CallToolResult:
    result = await ctx.session.elicit_form(message, schema)
    text = f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"
    return CallToolResult(content=[TextContent(text=text)])


@mcp.tool(description="Elicitation whose schema has defaults for every primitive type (SEP-1034).")
async def test_elicitation_sep1034_defaults(ctx: Context) -> CallToolResult:
    return await _elicit_raw(ctx, "Please review and update the form fields with defaults", SEP1034_SCHEMA)


@mcp.tool(description="Elicitation whose schema has all five enum variants (SEP-1330).")
async def test_elicitation_sep1330_enums(ctx: Context) -> CallToolResult:
    return await _elicit_raw(ctx, "Please select options from the enum fields", SEP1330_SCHEMA)


@mcp.tool(name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features")
def json_schema_2020_12_tool(
    name: str | None = None,
    address: dict[str, Any] | None = None,
    contactMethod: str | None = None,
    phone: str | None = None,
    email: str | None = None,
) -> CallToolResult:
    given = {k: v for k, v in locals().items() if v is not None}
    return CallToolResult(content=[TextContent(text=f"Received: {json.dumps(given, sort_keys=True)}")])


# The SDK derives inputSchema from the signature; the scenario checks the 2020-12 keywords verbatim.
_schema_tool = mcp._tool_manager.get_tool("json_schema_2020_12_tool")
assert _schema_tool is not None
_schema_tool.parameters = JSON_SCHEMA_2020_12


# ---- tools: input-required results (2026-07-28, SEP-2322) --------------------------------------
# Each returns an InputRequiredResult until the retried tools/call carries what it asked for. The SDK
# seals requestState (integrity-protected), so a tampered state is rejected before the tool runs.


def _ask(message: str, field_name: str, field_type: str = "string") -> ElicitRequest:
    schema = {"type": "object", "properties": {field_name: {"type": field_type}}, "required": [field_name]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str, max_tokens: int) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(text=text))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def _answer(ctx: Context, key: str, field_name: str) -> Any:
    """The accepted elicitation value ``field_name`` under ``key``, or None."""
    response = (ctx.input_responses or {}).get(key)
    if isinstance(response, ElicitResult) and response.action == "accept" and response.content:
        return response.content.get(field_name)
    return None


def _sampled_text(ctx: Context, key: str) -> str | None:
    response = (ctx.input_responses or {}).get(key)
    if isinstance(response, CreateMessageResult):
        content = response.content
        return content.text if isinstance(content, TextContent) else f"<{content.type}>"
    return None


def _roots(ctx: Context, key: str) -> list[str] | None:
    response = (ctx.input_responses or {}).get(key)
    return [str(root.uri) for root in response.roots] if isinstance(response, ListRootsResult) else None


def _text(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(text=text)])


@mcp.tool(description="Asks the user's name through an InputRequiredResult, then greets them.")
def test_input_required_result_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
    name = _answer(ctx, "user_name", "name")
    if name is None:
        return InputRequiredResult(input_requests={"user_name": _ask("What is your name?", "name")})
    return _text(f"Hello, {name}!")


@mcp.tool(description="Samples the client's LLM through an InputRequiredResult.")
def test_input_required_result_sampling(ctx: Context) -> CallToolResult | InputRequiredResult:
    reply = _sampled_text(ctx, "capital_question")
    if reply is None:
        question = _sample("What is the capital of France?", 100)
        return InputRequiredResult(input_requests={"capital_question": question})
    return _text(f"Sampling response: {reply}")


@mcp.tool(description="Lists the client's roots through an InputRequiredResult.")
def test_input_required_result_list_roots(ctx: Context) -> CallToolResult | InputRequiredResult:
    roots = _roots(ctx, "client_roots")
    if roots is None:
        return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})
    return _text(f"Client roots: {json.dumps(roots)}")


@mcp.tool(description="An InputRequiredResult with requestState; answers state-ok when the state comes back.")
def test_input_required_result_request_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    ok = _answer(ctx, "confirm", "ok")
    if ok is None or ctx.request_state != "request-state-round-1":
        return InputRequiredResult(
            input_requests={"confirm": _ask("Please confirm", "ok", "boolean")}, request_state="request-state-round-1"
        )
    return _text(f"state-ok: confirmed={ok}")


@mcp.tool(description="One InputRequiredResult asking for elicitation, sampling and roots at once.")
def test_input_required_result_multiple_inputs(ctx: Context) -> CallToolResult | InputRequiredResult:
    name, greeting, roots = (
        _answer(ctx, "user_name", "name"),
        _sampled_text(ctx, "greeting"),
        _roots(ctx, "client_roots"),
    )
    if name is None or greeting is None or roots is None or ctx.request_state != "multiple-inputs":
        requests: dict[str, Any] = {
            "user_name": _ask("What is your name?", "name"),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        }
        return InputRequiredResult(input_requests=requests, request_state="multiple-inputs")
    return _text(f"name={name}, greeting={greeting}, roots={json.dumps(roots)}")


@mcp.tool(description="Two rounds of InputRequiredResult, the requestState evolving between them.")
def test_input_required_result_multi_round(ctx: Context) -> CallToolResult | InputRequiredResult:
    state = ctx.request_state or ""
    if state.startswith("round-2:"):
        color = _answer(ctx, "step2", "color")
        if color is not None:
            return _text(f"Completed: name={state.removeprefix('round-2:')}, color={color}")
    elif state == "round-1" and (name := _answer(ctx, "step1", "name")) is not None:
        step2 = _ask("Step 2: What is your favorite color?", "color")
        return InputRequiredResult(input_requests={"step2": step2}, request_state=f"round-2:{name}")
    step1 = _ask("Step 1: What is your name?", "name")
    return InputRequiredResult(input_requests={"step1": step1}, request_state="round-1")


@mcp.tool(description="An InputRequiredResult whose (SDK-sealed) requestState must come back unaltered.")
def test_input_required_result_tampered_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    if ctx.request_state == "tamper-check" and _answer(ctx, "confirm", "ok") is not None:
        return _text("state verified")
    return InputRequiredResult(
        input_requests={"confirm": _ask("Please confirm", "ok", "boolean")}, request_state="tamper-check"
    )


@mcp.tool(description="Asks only for what the client declared (sampling, elicitation, roots).")
def test_input_required_result_capabilities(ctx: Context) -> CallToolResult | InputRequiredResult:
    caps = ctx.client_capabilities
    responses = ctx.input_responses or {}
    requests: dict[str, Any] = {}
    if caps is not None and caps.sampling is not None and "sample" not in responses:
        requests["sample"] = _sample("Say hello", 50)
    if caps is not None and caps.elicitation is not None and "elicit" not in responses:
        requests["elicit"] = _ask("What is your name?", "name")
    if caps is not None and caps.roots is not None and "roots" not in responses:
        requests["roots"] = ListRootsRequest()
    if requests:
        return InputRequiredResult(input_requests=requests)
    return _text(f"Received: {sorted(responses)}")


# ---- tools: the 2026-07-28 stateless scenario's diagnostic hooks -----------------------------------


def _require(ctx: Context, capability: str) -> None:
    """MissingRequiredClientCapabilityError (-32021) unless the client declared ``capability``."""
    caps = ctx.client_capabilities
    if caps is None or getattr(caps, capability, None) is None:
        data: dict[str, Any] = {"requiredCapabilities": {capability: {}}}
        raise MCPError(
            MISSING_REQUIRED_CLIENT_CAPABILITY, f"this tool needs the client's {capability} capability", data
        )


@mcp.tool(description="Needs the client's sampling capability; -32021 without it.")
def test_missing_capability(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "sampling")
    reply = _sampled_text(ctx, "sample")
    if reply is None:
        return InputRequiredResult(input_requests={"sample": _sample("Say hello", 50)})
    return _text(f"Sampling response: {reply}")


@mcp.tool(description="Needs elicitation; answers on the request's own stream with an InputRequiredResult.")
def test_streaming_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "elicitation")
    name = _answer(ctx, "user_name", "name")
    if name is None:
        return InputRequiredResult(input_requests={"user_name": _ask("What is your name?", "name")})
    return _text(f"Hello, {name}!")


@mcp.tool(description="Logs one message (sent only when the request asked for a log level), then answers.")
async def test_logging_tool(ctx: Context) -> CallToolResult:
    await _log(ctx, "info", "test_logging_tool ran")
    return _text("Logging tool executed")


@mcp.tool(description="Adds a tool and announces the tool list change to subscribers.")
async def test_trigger_tool_change(ctx: Context) -> CallToolResult:
    count = len(mcp._tool_manager.list_tools())

    def dynamic_tool() -> str:
        return "dynamic tool called"

    mcp.add_tool(dynamic_tool, name=f"test_dynamic_tool_{count}", description="Added at runtime.")
    await ctx.notify_tools_changed()
    return _text("tool list changed")


@mcp.tool(description="Adds a prompt and announces the prompt list change to subscribers.")
async def test_trigger_prompt_change(ctx: Context) -> CallToolResult:
    count = len(mcp._prompt_manager.list_prompts())

    def dynamic_prompt() -> str:
        return "A prompt added at runtime."

    mcp.add_prompt(Prompt.from_function(dynamic_prompt, name=f"test_dynamic_prompt_{count}", description="Added."))
    await ctx.notify_prompts_changed()
    return _text("prompt list changed")


# ---- tools: custom parameter headers (2026-07-28, SEP-2243) ----------------------------------------
# http-custom-header-server-validation looks for a tool with a string-typed x-mcp-header property and
# checks the HTTP server validates the Mcp-Param-* headers against the body. Over stdio the headers never
# reach this process: that check belongs to whatever serves it over HTTP. Registered last, so the tool the
# other scenarios take first (tools[0]) stays test_simple_text.


@mcp.tool(description="Echoes its arguments; both are mirrored into Mcp-Param-* headers (x-mcp-header).")
def test_custom_headers(
    region: Annotated[str, Field(description="Routing region", json_schema_extra={"x-mcp-header": "Region"})],
    priority: Annotated[int, Field(description="Priority", json_schema_extra={"x-mcp-header": "Priority"})] = 0,
) -> CallToolResult:
    return _text(f"region={region}, priority={priority}")


# ---- resources -------------------------------------------------------------------------

mcp.add_resource(
    TextResource(
        uri="test://static-text",
        name="static-text",
        description="A static text resource for testing",
        mime_type="text/plain",
        text="This is the content of the static text resource.",
    )
)
mcp.add_resource(
    BinaryResource(
        uri="test://static-binary",
        name="static-binary",
        description="A static binary resource (a 1x1 PNG) for testing",
        mime_type="image/png",
        data=PNG,
    )
)


@mcp.resource(
    WATCHED_URI,
    name="watched-resource",
    description="A resource clients can subscribe to",
    mime_type="text/plain",
)
def watched_resource() -> str:
    return "Watched resource content"


@mcp.resource(
    "test://template/{id}/data",
    name="template-data",
    description="A resource template with an id parameter",
    mime_type="application/json",
)
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))


async def _subscribe(ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
    _state["subscriptions"].add(str(params.uri))
    return EmptyResult()


async def _unsubscribe(ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
    _state["subscriptions"].discard(str(params.uri))
    return EmptyResult()


async def _set_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
    _state["log_level"] = params.level
    return EmptyResult()


_lowlevel = mcp._lowlevel_server
_lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, _subscribe)
_lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe)
_lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, _set_level)


# ---- prompts ---------------------------------------------------------------------------


@mcp.prompt(description="A simple prompt without arguments")
def test_simple_prompt() -> list[Message]:
    return [UserMessage("This is a simple prompt for testing.")]


@mcp.prompt(description="A prompt with two required arguments")
def test_prompt_with_arguments(
    arg1: Annotated[str, Field(description="First test argument")],
    arg2: Annotated[str, Field(description="Second test argument")],
) -> list[Message]:
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt(description="A prompt that embeds a resource")
def test_prompt_with_embedded_resource(
    resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
) -> list[Message]:
    resource = TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
    )
    return [
        UserMessage(EmbeddedResource(resource=resource)),
        UserMessage("Please process the embedded resource above."),
    ]


@mcp.prompt(description="A prompt with image content")
def test_prompt_with_image() -> list[Message]:
    return [
        UserMessage(ImageContent(data=PNG_B64, mime_type="image/png")),
        UserMessage("Please analyze the image above."),
    ]


@mcp.prompt(description="A prompt that asks for context through an InputRequiredResult first")
def test_input_required_result_prompt(ctx: Context) -> list[Message] | InputRequiredResult:
    context = _answer(ctx, "user_context", "context")
    if context is None:
        request = _ask("What context should the prompt use?", "context")
        return InputRequiredResult(input_requests={"user_context": request})
    return [UserMessage(f"Prompt with context: {context}")]


# ---- completion ------------------------------------------------------------------------

_COMPLETIONS = {"arg1": ["paris", "park", "party"], "arg2": ["world", "wonder", "work"], "id": ["1", "123", "42"]}


@mcp.completion()  # type: ignore[untyped-decorator, no-untyped-call]  # the SDK leaves it unannotated
async def complete(
    ref: PromptReference | ResourceTemplateReference,
    argument: CompletionArgument,
    context: CompletionContext | None,
) -> Completion:
    candidates = _COMPLETIONS.get(argument.name, [])
    values = [v for v in candidates if v.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


if __name__ == "__main__":
    mcp.run("stdio")
