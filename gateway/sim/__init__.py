"""A simulated OpenAI Realtime / Azure OpenAI realtime upstream, independent of the gateway's
own protocol code (it must not import ``gateway.protocol``: a shared bug would hide).

Endpoints
    WS   /v1/realtime?model=M                  OpenAI. GA, or beta with ``OpenAI-Beta: realtime=v1``
                                               or the ``openai-beta.realtime-v1`` subprotocol.
    WS   /openai/realtime?api-version=V&deployment=D   Azure; beta when V ends in -preview, else GA.
    WS   /openai/v1/realtime?model=D           Azure GA (an api-version parameter is refused).
    POST /v1/realtime/client_secrets           GA ephemeral key (also under /openai/v1).
    POST /v1/realtime/sessions                 beta ephemeral key (``client_secret.value``).
    GET  /healthz
  Keys: ``Authorization: Bearer K``, ``api-key: K`` header, ``openai-insecure-api-key.K``
  subprotocol or ``api-key`` query parameter; only ``SimConfig.api_keys`` and unspent,
  unexpired ``ek_`` keys pass (an ``ek_`` key opens one WebSocket and starts it with the
  minted session). Anything else: HTTP 401 on the upgrade with OpenAI's JSON error body.
  The subprotocol ``realtime`` is selected when offered (and no other).

Faults per connection
    Query parameter ``sim_fault`` (repeatable) or header ``X-Sim-Fault``; each value is a
    comma-separated list applied over the ``SimConfig`` fault options:
        refuse:S            refuse the upgrade with HTTP status S (JSON body, Retry-After
                            on 429 and 503)
        close_after:K[:C]   close with code C (default 1011) after the K-th event of a response
        stall_after:K       after the K-th event of a response send nothing more (stay open)
        malformed_after:K   after the K-th event of a response send one non-JSON text frame
        near_exhausted      rate_limits.updated reports ~1 % of the budget remaining
        fail_response       every response ends with response.done status "failed"
        none                clear the faults of the SimConfig for this connection
    "Events of a response" count from response.created (1) through response.done, including
    rate_limits.updated. Example: ``ws://127.0.0.1:PORT/v1/realtime?model=gpt-realtime&sim_fault=close_after:3:1011``.
    A fault value that does not parse refuses the upgrade with 400.

Behaviour notes (what a client can rely on)
    * ``refuse_beta`` ("OpenAI today"): beta on /v1/realtime is accepted, sent an ``error``
      (``beta_api_shape_disabled``) and closed with 4000
      ``invalid_request_error.beta_api_shape_disabled``.
    * ``max_session_seconds``: ``error`` ``session_expired``, then close 1000 with reason
      ``invalid_request_error.session_expired`` (the real close code is not documented).
    * A missing ``type`` is ``invalid_event`` ("The 'type' field is missing.", as in the spec
      example); an unknown ``type`` is ``invalid_value`` with param ``type``; unknown event
      fields are ``unknown_parameter``; unparsable JSON is ``invalid_json``. Unknown item ids
      answer ``item_{retrieve,truncate,delete}_invalid_item_id`` (code names not verified).
    * Rate limits: one budget per standard key (``requests_limit``/``tokens_limit`` per
      ``reset_seconds`` window) shared by its connections and ek_ keys; each response reserves
      one request and its expected tokens at its start, reported by ``rate_limits.updated``
      right after ``response.created``; an exhausted budget fails the response with
      ``rate_limit_exceeded``.
    * Audio deltas are paced at real time x ``SimConfig.speed`` (0: no waiting).
"""

from gateway.sim.app import SimHub, create_sim_app
from gateway.sim.config import SimConfig
from gateway.sim.server import SimServer, run_sim

__all__ = ["SimConfig", "SimHub", "SimServer", "create_sim_app", "run_sim"]
