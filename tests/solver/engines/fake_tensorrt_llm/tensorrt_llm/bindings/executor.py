"""FAKE `tensorrt_llm.bindings.executor` for tests: not TensorRT-LLM (see ../../README.md).

Mirrors the names, positional/keyword structure and defaults of the real Python bindings for
the classes and methods `solver/engines/trtllm.py` uses, as read from TensorRT-LLM's source:

- `cpp/tensorrt_llm/nanobind/executor/bindings.cpp` (commit 01315fdb): `ModelType`.
- `cpp/tensorrt_llm/nanobind/executor/request.cpp` (commit ac456dca; the pybind twin
  `cpp/tensorrt_llm/pybind/executor/request.cpp` has the same names): `FinishReason`,
  `SamplingConfig`, `OutputConfig`, `Request`, `Result`, `Response`.
- `cpp/tensorrt_llm/nanobind/executor/executorConfig.cpp` (commit 008b2b8d): `KvCacheConfig`,
  `ExecutorConfig`.
- `cpp/tensorrt_llm/nanobind/executor/executor.cpp` (commit 1dd50d07): `Executor` and its
  methods; `cpp/tensorrt_llm/executor/executorImpl.cpp` for `cancel_request` ignoring finished
  ids and for calls after `shutdown()` failing.

Unknown keyword arguments raise `TypeError`, as the bindings do. `Executor.await_responses`
mirrors only the `timeout` overload (the real one also takes `id` or `ids`).

How the fake generates (FAKE-ONLY, set by tests through the module attributes below): each
request's tokens come from `model(request)`; every `await_responses` call advances every active
request by up to `tokens_per_step` tokens and applies the executor's stop rules in order:
`end_id` (finish END_ID; the EOS is in the output when `end_id_in_output`), a one-token stop
word (STOP_WORDS, stop token kept), `max_tokens` (LENGTH). A streaming request gets one
`Response` per call; a request with `streaming=False` gets a single one when it ends.
`model(request)` may return an `Exception` to make the request end with an error response.
With block reuse on, the fake records the longest prefix a request shares with any earlier
request's tokens (token-granular; the real cache reuses whole blocks).
"""

from __future__ import annotations

import enum
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Callable

# ---- FAKE-ONLY controls (not part of TensorRT-LLM) -----------------------------------------------

model: Callable[["Request"], "list[int] | Exception"]
tokens_per_step: int
end_id_in_output: bool
refuse_enqueue: Callable[["Request"], str | None]  # a message makes enqueue_request raise
executors: list["Executor"]
FILLER_TOKEN = 7


def reset_fake() -> None:
    """Restore the default behaviour and forget created executors."""
    global model, tokens_per_step, end_id_in_output, refuse_enqueue, executors
    model = _default_model
    tokens_per_step = 1
    end_id_in_output = True
    refuse_enqueue = lambda request: None  # noqa: E731
    executors = []


def _default_model(request: "Request") -> list[int]:
    seed = request.sampling_config.seed or 0
    return [100 + (seed * 31 + 7 * i) % 50 for i in range(request.max_tokens)]


# ---- enums ---------------------------------------------------------------------------------------


class ModelType(enum.Enum):  # bindings.cpp
    DECODER_ONLY = 0
    ENCODER_ONLY = 1
    ENCODER_DECODER = 2


class FinishReason(enum.Enum):  # request.cpp
    NOT_FINISHED = 0
    END_ID = 1
    STOP_WORDS = 2
    LENGTH = 3
    TIMED_OUT = 4
    CANCELLED = 5


class RequestType(enum.Enum):  # request.cpp
    REQUEST_TYPE_CONTEXT_AND_GENERATION = 0
    REQUEST_TYPE_CONTEXT_ONLY = 1
    REQUEST_TYPE_GENERATION_ONLY = 2


# ---- request.cpp ---------------------------------------------------------------------------------


class SamplingConfig:
    def __init__(
        self,
        beam_width=1,
        *,
        top_k=None,
        top_p=None,
        top_p_min=None,
        top_p_reset_ids=None,
        top_p_decay=None,
        seed=None,
        temperature=None,
        min_tokens=None,
        beam_search_diversity_rate=None,
        repetition_penalty=None,
        presence_penalty=None,
        frequency_penalty=None,
        length_penalty=None,
        early_stopping=None,
        no_repeat_ngram_size=None,
        num_return_sequences=None,
        min_p=None,
        beam_width_array=None,
    ):
        if seed is not None and not 0 <= seed < 2**64:
            raise TypeError("seed must fit an unsigned 64-bit integer")  # RandomSeedType is uint64
        self.beam_width = beam_width
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self.temperature = temperature
        self.num_return_sequences = num_return_sequences


class OutputConfig:
    def __init__(
        self,
        return_log_probs=None,
        return_context_logits=None,
        return_generation_logits=None,
        exclude_input_from_output=None,
        return_encoder_output=None,
        return_perf_metrics=None,
        additional_model_outputs=None,
    ):
        self.return_log_probs = bool(return_log_probs)
        self.return_context_logits = bool(return_context_logits)
        self.return_generation_logits = bool(return_generation_logits)
        self.exclude_input_from_output = bool(exclude_input_from_output)
        self.return_encoder_output = bool(return_encoder_output)
        self.return_perf_metrics = bool(return_perf_metrics)
        self.additional_model_outputs = additional_model_outputs


class Request:
    def __init__(
        self,
        input_token_ids,
        max_tokens,
        *,
        streaming=False,
        sampling_config=None,
        output_config=None,
        end_id=None,
        pad_id=None,
        position_ids=None,
        bad_words=None,
        stop_words=None,
        embedding_bias=None,
        external_draft_tokens_config=None,
        prompt_tuning_config=None,
        multimodal_input=None,
        multimodal_embedding=None,
        mrope_config=None,
        lora_config=None,
        lookahead_config=None,
        kv_cache_retention_config=None,
        logits_post_processor_name=None,
        logits_post_processor=None,
        encoder_input_token_ids=None,
        client_id=None,
        return_all_generated_tokens=False,
        priority=0.5,
        type=RequestType.REQUEST_TYPE_CONTEXT_AND_GENERATION,
        context_phase_params=None,
        encoder_input_features=None,
        encoder_output_length=None,
        cross_attention_mask=None,
        num_return_sequences=1,
        eagle_config=None,
        skip_cross_attn_blocks=None,
        guided_decoding_params=None,
        language_adapter_uid=None,
        allotted_time_ms=None,
        cache_salt_id=None,
    ):
        if not all(isinstance(token, int) for token in input_token_ids):
            raise TypeError("input_token_ids must be a list of int")  # VecTokens
        if stop_words is not None and not all(isinstance(word, list) for word in stop_words):
            raise TypeError("stop_words must be a list of token-id lists")  # std::list<VecTokens>
        self.input_token_ids = list(input_token_ids)
        self.max_tokens = max_tokens
        self.streaming = streaming
        self.sampling_config = sampling_config if sampling_config is not None else SamplingConfig()
        self.output_config = output_config if output_config is not None else OutputConfig()
        self.end_id = end_id
        self.pad_id = pad_id
        self.bad_words = bad_words
        self.stop_words = stop_words
        self.return_all_generated_tokens = return_all_generated_tokens
        self.num_return_sequences = num_return_sequences


class Result:
    def __init__(self):
        self.is_final = False
        self.output_token_ids: list[list[int]] = []
        self.cum_log_probs = None
        self.log_probs = None
        self.context_logits = None
        self.generation_logits = None
        self.finish_reasons: list[FinishReason] = []
        self.sequence_index = 0
        self.is_sequence_final = False


class Response:
    def __init__(self, request_id, result=None, error_msg=None, client_id=None):
        self._request_id = request_id
        self._result = result
        self._error_msg = error_msg
        self._client_id = client_id

    @property
    def request_id(self):
        return self._request_id

    @property
    def client_id(self):
        return self._client_id

    def has_error(self):
        return self._error_msg is not None

    @property
    def error_msg(self):
        return self._error_msg

    @property
    def result(self):
        if self._error_msg is not None:
            raise RuntimeError("Cannot get the result for a response with an error")
        return self._result


# ---- executorConfig.cpp --------------------------------------------------------------------------


class KvCacheConfig:
    def __init__(
        self,
        enable_block_reuse=True,
        max_tokens=None,
        max_attention_window=None,
        sink_token_length=None,
        free_gpu_memory_fraction=None,
        host_cache_size=None,
        onboard_blocks=True,
        cross_kv_cache_fraction=None,
        secondary_offload_min_priority=None,
        event_buffer_max_size=0,
        *,
        enable_partial_reuse=True,
        copy_on_partial_reuse=True,
        use_uvm=False,
        runtime_defaults=None,
    ):
        self.enable_block_reuse = enable_block_reuse
        self.max_tokens = max_tokens
        self.free_gpu_memory_fraction = free_gpu_memory_fraction
        self.enable_partial_reuse = enable_partial_reuse


class ExecutorConfig:
    def __init__(
        self,
        max_beam_width=1,
        scheduler_config=None,
        kv_cache_config=None,
        enable_chunked_context=False,
        normalize_log_probs=True,
        iter_stats_max_iterations=None,  # real defaults of this and the other None-defaulted
        request_stats_max_iterations=None,  # objects are C++ constants; the fake needs none of them
        batching_type=None,
        max_batch_size=None,
        max_num_tokens=None,
        parallel_config=None,
        peft_cache_config=None,
        logits_post_processor_config=None,
        decoding_config=None,
        use_gpu_direct_storage=False,
        gpu_weights_percent=1.0,
        max_queue_size=None,
        extended_runtime_perf_knob_config=None,
        debug_config=None,
        recv_poll_period_ms=0,
        max_seq_idle_microseconds=None,
        spec_dec_config=None,
        guided_decoding_config=None,
        additional_model_outputs=None,
        cache_transceiver_config=None,
        gather_generation_logits=False,
        mm_embedding_offloading=False,
        enable_trt_overlap=False,
    ):
        self.max_beam_width = max_beam_width
        self.kv_cache_config = kv_cache_config if kv_cache_config is not None else KvCacheConfig()
        self.enable_chunked_context = enable_chunked_context
        self.max_batch_size = max_batch_size
        self.parallel_config = parallel_config
        self.gather_generation_logits = gather_generation_logits


# ---- executor.cpp --------------------------------------------------------------------------------


class _Stream:
    """FAKE-ONLY: one request being generated."""

    def __init__(self, request: Request, planned: "list[int] | Exception"):
        self.request = request
        self.planned = planned
        self.generated: list[int] = []
        self.unsent: list[int] = []  # held back until the end when the request is not streaming
        self.cancelled = False


class Executor:
    def __init__(self, model_path, model_type, executor_config):
        if not isinstance(model_type, ModelType) or not isinstance(executor_config, ExecutorConfig):
            raise TypeError("Executor(model_path, model_type: ModelType, executor_config: ExecutorConfig)")
        config_path = Path(os.fspath(model_path)) / "config.json"
        self.engine_config = json.loads(config_path.read_text())  # the real executor reads it too
        self.model_path = Path(os.fspath(model_path))
        self.model_type = model_type
        self.executor_config = executor_config
        # FAKE-ONLY records for tests:
        self.enqueued: dict[int, Request] = {}
        self.cancelled_ids: list[int] = []
        self.reused_prefix_lengths: dict[int, int] = {}
        self.is_shut_down = False
        self._streams: dict[int, _Stream] = {}
        self._finished_sequences: list[list[int]] = []
        self._next_id = 1
        executors.append(self)

    def _check_running(self):
        if self.is_shut_down:
            raise RuntimeError("Shutdown called")

    def enqueue_request(self, request):
        self._check_running()
        if not isinstance(request, Request):
            raise TypeError("enqueue_request(request: Request)")
        refusal = refuse_enqueue(request)
        if refusal is not None:
            raise RuntimeError(refusal)
        request_id = self._next_id
        self._next_id += 1
        self.enqueued[request_id] = request
        if self.executor_config.kv_cache_config.enable_block_reuse:
            self.reused_prefix_lengths[request_id] = max(
                (_common_prefix(request.input_token_ids, seq) for seq in self._finished_sequences), default=0
            )
        self._streams[request_id] = _Stream(request, model(request))
        return request_id

    def enqueue_requests(self, requests):
        return [self.enqueue_request(request) for request in requests]

    def await_responses(self, timeout=None):
        self._check_running()
        if timeout is not None and not isinstance(timeout, timedelta):
            raise TypeError("timeout must be a datetime.timedelta (std::chrono::milliseconds)")
        responses = [self._advance(request_id, stream) for request_id, stream in list(self._streams.items())]
        return [response for response in responses if response is not None]

    def cancel_request(self, id=None):
        self._check_running()
        self.cancelled_ids.append(id)
        stream = self._streams.get(id)
        if stream is not None:  # finished ids are ignored, as in executorImpl.cpp
            stream.cancelled = True

    def can_enqueue_requests(self):
        rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0"))
        return not self.is_shut_down and rank == "0"

    def shutdown(self):
        self.is_shut_down = True

    def _advance(self, request_id: int, stream: _Stream) -> Response | None:
        request = stream.request
        if isinstance(stream.planned, Exception):
            del self._streams[request_id]
            return Response(request_id, error_msg=str(stream.planned))
        result = Result()
        if stream.cancelled:
            return self._finish(request_id, result, [], FinishReason.CANCELLED)
        stops = {word[0] for word in (request.stop_words or []) if len(word) == 1}
        new: list[int] = []
        for _ in range(tokens_per_step):
            index = len(stream.generated)
            token = stream.planned[index] if index < len(stream.planned) else FILLER_TOKEN
            stream.generated.append(token)
            if token == request.end_id:
                if end_id_in_output:
                    new.append(token)
                return self._finish(request_id, result, new, FinishReason.END_ID)
            new.append(token)
            if token in stops:
                return self._finish(request_id, result, new, FinishReason.STOP_WORDS)
            if len(stream.generated) >= request.max_tokens:
                return self._finish(request_id, result, new, FinishReason.LENGTH)
        if not request.streaming:  # one response at the end, holding every token
            stream.unsent.extend(new)
            return None
        result.output_token_ids = [new]
        result.finish_reasons = [FinishReason.NOT_FINISHED]
        return Response(request_id, result=result)

    def _finish(self, request_id: int, result: Result, new: list[int], reason: FinishReason) -> Response:
        stream = self._streams.pop(request_id)
        self._finished_sequences.append(stream.request.input_token_ids + stream.generated)
        result.is_final = True
        result.is_sequence_final = True
        result.output_token_ids = [stream.unsent + new]
        result.finish_reasons = [reason]
        return Response(request_id, result=result)


def _common_prefix(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


reset_fake()
