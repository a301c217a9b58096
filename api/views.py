"""The /v1/ endpoints: authenticate, rate-limit, parse, delegate, shape the reply.

Every view goes through ``api_endpoint``, which turns ApiError into OpenAI's error
shape and anything unexpected into a 500 with a plain sentence (the traceback goes
to the log, never to the client).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from api import completions, finetuning, openapi, responses
from api.auth import api_key_from_request, generation_slots_take, rate_limit_check
from api.errors import ApiError, error_response, not_found
from api.models import ApiKey
from api.schemas import ChatRequest, parse_chat_request, parse_json_body, parse_seed_request
from api.services import api_transcript_store
from api.sse import sse_response
from inference import fair_use, registry

logger = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[HttpResponseBase]]


def api_endpoint(*methods: str, authenticated: bool = True) -> Callable[[Handler], Callable[..., Any]]:
    """Wrap an async handler ``(request, api_key, **url_kwargs)``; see the module docstring."""

    def decorate(handler: Handler) -> Callable[..., Any]:
        @csrf_exempt
        @functools.wraps(handler)
        async def view(request: HttpRequest, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in methods:
                    raise ApiError(405, f"{request.method} is not allowed on {request.path}; use {', '.join(methods)}.")
                api_key = await api_key_from_request(request) if authenticated else None
                if api_key is not None:
                    await rate_limit_check(api_key=api_key)
                return await handler(request, api_key, **kwargs)
            except ApiError as exc:
                return error_response(exc)
            except Http404:
                return error_response(not_found(f"Nothing is found at {request.path}."))
            except Exception:
                logger.exception("The API view %s failed", handler.__name__)
                return error_response(ApiError(500, "The server failed while handling this request; try again."))

        return view

    return decorate


def read_json(request: HttpRequest) -> dict[str, Any]:
    """The JSON object in the body, or 413 over ``API_MAX_BODY_BYTES`` and 400 if malformed."""
    limit = settings.API_MAX_BODY_BYTES
    declared = request.headers.get("Content-Length", "")
    too_big = ApiError(413, f"The request body is larger than the limit of {limit:,} bytes.", code="body_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    try:
        raw = request.body
    except RequestDataTooBig:
        raise too_big from None
    if len(raw) > limit:
        raise too_big
    return parse_json_body(raw)


async def _model_spec(api_key: ApiKey, model_id: str, param: str | None = "model") -> registry.ModelSpec:
    """The model, if the key's owner may use it; a 404 alike for one they may not and one
    that does not exist, so ids of restricted models do not leak."""
    spec = await sync_to_async(registry.model_get)(model_id, user=api_key.owner)
    if spec is None:
        raise not_found(
            f"The model {model_id!r} does not exist or you do not have access to it; GET /v1/models lists them.",
            param=param,
            code="model_not_found",
        )
    return spec


def model_object(spec: registry.ModelSpec) -> dict[str, Any]:
    # Base models have no creation date of their own; 0 says so rather than inventing one.
    created = int(getattr(spec, "created", 0) or 0)
    return responses.Model(id=spec.id, created=created, owned_by=spec.owned_by).model_dump()


async def _with_store(
    events: AsyncIterator[dict[str, Any]], *, api_key: ApiKey, request: ChatRequest, completion: completions.Completion
) -> AsyncIterator[dict[str, Any]]:
    """Pass the events on; once the reply is complete, keep the transcript if asked."""
    async for event in events:
        yield event
    if request.store:
        await sync_to_async(api_transcript_store)(owner=api_key.owner, request=request, completion=completion)


async def _parsed(request: HttpRequest, parse: Callable[[dict[str, Any]], ChatRequest]) -> ChatRequest:
    """Read and validate the body off the event loop: a megabyte of JSON takes a while."""
    return await asyncio.to_thread(lambda: parse(read_json(request)))


async def _run(api_key: ApiKey, chat: ChatRequest) -> completions.Completion:
    spec = await _model_spec(api_key, chat.model)
    return await _open_holding_slots(api_key, spec, chat)


async def _open_holding_slots(api_key: ApiKey, spec: registry.ModelSpec, chat: ChatRequest) -> completions.Completion:
    """Start the completion in the owner's generation slots, held until its streams end."""
    slots = await generation_slots_take(api_key=api_key, count=chat.n)
    try:
        completion = await completions.completion_open(spec=spec, request=chat)
    except BaseException:
        await sync_to_async(slots.release)()
        raise
    fair_use.api_slots_keep(slots, streams=completion.streams)
    return completion


@api_endpoint("POST")
async def chat_completions(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    chat = await _parsed(request, parse_chat_request)
    completion = await _run(api_key, chat)
    if chat.stream:
        events = completions.completion_chunks(completion=completion, include_usage=chat.include_usage)
        return sse_response(_with_store(events, api_key=api_key, request=chat, completion=completion))
    await completions.completion_collect(completion=completion)
    if chat.store:
        await sync_to_async(api_transcript_store)(owner=api_key.owner, request=chat, completion=completion)
    return JsonResponse(completions.completion_body(completion))


@api_endpoint("POST")
async def seed_chat_completions(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    """The seed's own shape: ``x-api-key`` and ``{"model", "messages", "stream"}``."""
    chat = await _parsed(request, parse_seed_request)
    completion = await _run(api_key, chat)
    if chat.stream:
        return sse_response(completions.seed_chunks(completion=completion), done_marker=False)
    await completions.completion_collect(completion=completion)
    choice = completion.choices[0]
    return JsonResponse(completions.seed_body(completion, choice.text, choice.finish_reason, usage=True))


@api_endpoint("GET")
async def models_list(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    specs = await sync_to_async(registry.available_models)(user=api_key.owner)
    return JsonResponse(
        responses.ModelList.model_validate({"data": [model_object(spec) for spec in specs]}).model_dump()
    )


@api_endpoint("GET")
async def model_detail(request: HttpRequest, api_key: ApiKey, model_id: str) -> HttpResponseBase:
    return JsonResponse(model_object(await _model_spec(api_key, model_id, param=None)))


@api_endpoint("GET", authenticated=False)
async def openapi_json(request: HttpRequest, api_key: None) -> HttpResponseBase:
    """The document for everyone; the model ids in it only for a caller with a key, and
    only the models its owner may use."""
    model_ids = None
    if request.headers.get("Authorization") or request.headers.get("X-Api-Key"):
        caller = await api_key_from_request(request)
        specs = await sync_to_async(registry.available_models)(user=caller.owner)
        model_ids = [spec.id for spec in specs]
    document = openapi.openapi_document(server_url=request.build_absolute_uri("/v1"), model_ids=model_ids)
    return JsonResponse(document)


@csrf_exempt
async def not_found_view(request: HttpRequest, path: str = "") -> HttpResponse:
    """Unknown paths under /v1/ answer in the API's shape, not with an HTML page."""
    return error_response(not_found(f"Unknown API path {request.path}; see /v1/openapi.json."))


# --- Files and fine-tuning (the same services as the admin) --------------------------


async def _permitted(api_key: ApiKey) -> None:
    await sync_to_async(finetuning.permission_check)(user=api_key.owner)


@api_endpoint("GET", "POST")
async def files(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    await _permitted(api_key)
    if request.method == "GET":
        return JsonResponse(await sync_to_async(finetuning.file_list)())
    upload = request.FILES.get("file")
    purpose = request.POST.get("purpose")
    created = await sync_to_async(finetuning.file_upload)(user=api_key.owner, upload=upload, purpose=purpose)
    return JsonResponse(created)


@api_endpoint("GET", "DELETE")
async def file_detail(request: HttpRequest, api_key: ApiKey, file_id: str) -> HttpResponseBase:
    await _permitted(api_key)
    if request.method == "DELETE":
        return JsonResponse(await sync_to_async(finetuning.file_delete)(file_id=file_id))
    file = await sync_to_async(finetuning.file_get)(file_id=file_id)
    return JsonResponse(finetuning.file_object(file))


@api_endpoint("GET", "POST")
async def jobs(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    await _permitted(api_key)
    if request.method == "GET":
        limit = finetuning.page_limit(request.GET.get("limit"))
        return JsonResponse(await sync_to_async(finetuning.job_list)(after=request.GET.get("after"), limit=limit))
    body = read_json(request)
    return JsonResponse(await sync_to_async(finetuning.job_create)(user=api_key.owner, body=body))


@api_endpoint("GET")
async def job_detail(request: HttpRequest, api_key: ApiKey, job_id: str) -> HttpResponseBase:
    await _permitted(api_key)
    job = await sync_to_async(finetuning.job_get)(job_id=job_id)
    return JsonResponse(await sync_to_async(finetuning.job_object)(job))


@api_endpoint("POST")
async def job_cancel(request: HttpRequest, api_key: ApiKey, job_id: str) -> HttpResponseBase:
    await _permitted(api_key)
    return JsonResponse(await sync_to_async(finetuning.job_cancel)(job_id=job_id))


@api_endpoint("GET")
async def job_events(request: HttpRequest, api_key: ApiKey, job_id: str) -> HttpResponseBase:
    await _permitted(api_key)
    limit = finetuning.page_limit(request.GET.get("limit"))
    events = await sync_to_async(finetuning.job_events)(job_id=job_id, after=request.GET.get("after"), limit=limit)
    return JsonResponse(events)


@api_endpoint("GET")
async def job_checkpoints(request: HttpRequest, api_key: ApiKey, job_id: str) -> HttpResponseBase:
    await _permitted(api_key)
    limit = finetuning.page_limit(request.GET.get("limit"))
    found = await sync_to_async(finetuning.job_checkpoints)(job_id=job_id, after=request.GET.get("after"), limit=limit)
    return JsonResponse(found)
