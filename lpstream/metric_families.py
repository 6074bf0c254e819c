"""Every metric family the node exports, in one place: kind, labels, buckets and meaning.

Each role declares its groups in the registry it is given (``Metrics.declare``); the README's
"Metrics" table lists the same names (a test holds the two together).

Label values are bounded by what the node holds now, and a series goes when its thing goes:

* ``stream``: the gateway's streams, live (at most ``--max-streams``) or ended and still served
  for ``--end-linger`` seconds; the gateway drops a stream's series when it forgets the stream.
* ``rendition``: the ladder's profile names and ``ai``.
* ``pipeline``: live AI pipelines an orchestrator of the pool offers (at most 64 each).
* ``orchestrator``: ``host:port`` of the orchestrators in the gateway's pool; one that leaves the
  pool loses its series at the next scrape.
* ``worker``, ``gpu``: the orchestrator's registered workers, and the CUDA devices its
  in-process worker uses; read from live state at each scrape.
* ``kind``, ``outcome``, ``state``, ``store``: fixed sets named in the help text.
"""

from __future__ import annotations

from lpstream.metrics import MetricFamily

__all__ = [
    "ALL_FAMILIES",
    "FORWARD_FAMILIES",
    "GATEWAY_FAMILIES",
    "ORCHESTRATOR_FAMILIES",
    "POOL_FAMILIES",
    "STORE_FAMILIES",
]

PUBLISH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Seconds from a segment's last byte to its renditions being listed: a transcode of a
2 s segment takes a fraction of it on a machine with room; past its duration the stream falls
behind."""
ROUND_TRIP_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0)
"""Seconds from a job's first byte sent to its renditions back: the segment is sent while it
is cut, so this is about a segment's duration (2 s by default) plus the transcode's tail."""
FRAME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 4.0)
"""Seconds from a source frame reaching the gateway to its AI output coming back: tens of ms
for a light pipeline, up to seconds for a diffusion model on a small GPU."""
PAYMENT_CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds to check and credit one payment: signature recovery per ticket (about a ms), a
chain read once per block and a SQLite write per winning ticket."""
UPLOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds from a segment listed to it being stored: a local directory takes ms, an object
store over the internet tenths of a second, a store in trouble retries for longer."""


def _counter(name: str, help: str, *labels: str) -> MetricFamily:
    return MetricFamily(name=name, kind="counter", help=help, labels=labels)


def _gauge(name: str, help: str, *labels: str) -> MetricFamily:
    return MetricFamily(name=name, kind="gauge", help=help, labels=labels)


def _histogram(name: str, help: str, buckets: tuple[float, ...], *labels: str) -> MetricFamily:
    return MetricFamily(name=name, kind="histogram", help=help, labels=labels, buckets=buckets)


GATEWAY_FAMILIES = (
    _counter("publishes_total", "Publish sessions started."),
    _gauge("active_streams", "Streams with a live publisher."),
    _counter("segments_in_total", "Source segments cut from ingest, all streams."),
    _counter(
        "segments_out_total", "Rendition segments listed in playlists, all streams.", "rendition"
    ),
    _counter(
        "transcode_seconds_total",
        "Wall time of transcodes: waited for at the gateway, worked at the orchestrator.",
    ),
    _counter(
        "errors_total",
        "Errors by kind: ingest_limit, media, transcode, fair_share, pipeline, internal.",
        "kind",
    ),
    _counter("stream_segments_in_total", "Source segments cut from the stream.", "stream"),
    _counter(
        "stream_segments_out_total",
        "Segments of one rendition of the stream listed in its playlist.",
        "stream",
        "rendition",
    ),
    _histogram(
        "publish_latency_seconds",
        "From a source segment's last byte to all its transcoded renditions being listed.",
        PUBLISH_BUCKETS,
        "stream",
    ),
    _histogram(
        "ai_frame_latency_seconds",
        "From a source frame reaching the gateway to its live AI output frame coming back.",
        FRAME_BUCKETS,
        "stream",
        "pipeline",
    ),
    _counter(
        "ai_frames_out_total",
        "Frames the stream's live AI pipeline returned.",
        "stream",
        "pipeline",
    ),
    _counter(
        "ai_frames_dropped_total",
        "Source frames the stream's live AI pipeline left out (behind real time).",
        "stream",
        "pipeline",
    ),
)
"""Declared by the gateway (``Gateway``)."""

POOL_FAMILIES = (
    _gauge(
        "orchestrator_connected",
        "1 while the gateway holds a QUIC connection to it.",
        "orchestrator",
    ),
    _gauge("orchestrator_suspended", "1 while it is passed over after a failure.", "orchestrator"),
    _gauge(
        "orchestrator_latency_score",
        "Its last round trip over the segment's duration (lower is faster; absent: none yet).",
        "orchestrator",
    ),
    _counter("orchestrator_jobs_total", "Segments it answered.", "orchestrator"),
    _counter("orchestrator_failures_total", "Jobs that failed on its side.", "orchestrator"),
    _gauge(
        "orchestrator_pipeline_price_wei_per_second",
        "What its last info asked per second of a live AI pipeline.",
        "orchestrator",
        "pipeline",
    ),
    _histogram(
        "segment_round_trip_seconds",
        "From the gateway sending a transcode job's first byte to its renditions back.",
        ROUND_TRIP_BUCKETS,
        "orchestrator",
    ),
    _counter("payment_sent_wei_total", "Expected value of every ticket the gateway sent, wei."),
    _counter("tickets_sent_total", "Tickets the gateway signed and sent."),
)
"""Declared by the gateway's orchestrator pool (``OrchestratorPool.export_metrics``)."""

ORCHESTRATOR_FAMILIES = (
    _counter("jobs_total", "Jobs answered, by outcome: ok, busy, failed.", "outcome"),
    _counter("worker_failures_total", "Jobs a worker failed (then retried elsewhere)."),
    _counter("ai_job_seconds_total", "Wall time of batch AI jobs, by capability.", "capability"),
    _counter(
        "ai_units_total",
        "Units batch AI jobs produced and were billed for (pixels, milliseconds of audio, "
        "tokens), by capability.",
        "capability",
    ),
    _counter(
        "transcode_seconds_total",
        "Wall time of transcodes: waited for at the gateway, worked at the orchestrator.",
    ),
    _gauge("workers", "Registered workers."),
    _gauge("sessions", "Sessions holding capacity."),
    _gauge("capacity", "Sessions' worth of work all workers can take (--capacity)."),
    _gauge("capacity_pixels_per_second", "Work all workers can take."),
    _gauge("work_pixels_per_second", "Work the sessions hold."),
    _gauge("worker_sessions", "Sessions the worker holds.", "worker"),
    _gauge("worker_capacity", "The worker's --capacity, in sessions' worth.", "worker"),
    _gauge(
        "gpu_encode_sessions",
        "Sessions the in-process worker holds, encoded with NVENC on the GPU.",
        "gpu",
    ),
    _gauge("gpu_pipeline_sessions", "Live AI sessions whose pipeline runs on the GPU.", "gpu"),
    _counter(
        "pipeline_child_failures_total",
        "Live AI pipeline child processes stopped, by pipeline and why: crashed, hung, memory.",
        "pipeline",
        "kind",
    ),
    _histogram(
        "payment_check_seconds",
        "Time to check and credit one payment (a job's or a live session's), by outcome: "
        "accepted, refused.",
        PAYMENT_CHECK_BUCKETS,
        "outcome",
    ),
    _counter("payment_received_wei_total", "Expected value of the tickets credited, wei."),
    _counter("payment_won_wei_total", "Face value of the winning tickets received, wei."),
    _counter("payment_redeemed_wei_total", "Face value of the tickets redeemed on chain, wei."),
    _counter("payment_billed_wei_total", "What the work done cost its senders, wei."),
    _counter("tickets_received_total", "Tickets credited."),
    _counter("tickets_won_total", "Winning tickets received."),
    _counter("tickets_redeemed_total", "Winning tickets redeemed on chain."),
    _counter("payments_refused_total", "Payments refused whole (402)."),
    _gauge("tickets_pending", "Winning tickets waiting to be redeemed."),
)
"""Declared by the orchestrator (``Orchestrator``)."""

STORE_FAMILIES = (
    _histogram(
        "store_upload_seconds",
        "Time from a segment listed to it being stored; store: record or origin.",
        UPLOAD_BUCKETS,
        "store",
    ),
    _counter("store_uploaded_bytes_total", "Bytes written to object stores.", "store"),
    _counter("store_upload_failures_total", "Writes to object stores that failed.", "store"),
    _counter(
        "store_segments_lost_total",
        "Segments not stored (dropped from a full queue, or failed after retries).",
        "store",
    ),
    _gauge("store_queue_depth", "Segments waiting for an object store, all streams.", "store"),
)
"""Declared with recordings or the live origin (``lpstream.storage.sink.register_metrics``)."""

FORWARD_FAMILIES = (
    _gauge("forwards", "Restreams by state: connecting, live, retrying.", "state"),
    _counter("forward_bytes_total", "Bytes restreams sent."),
)
"""Declared by the restreams (``OutputHub``)."""

ALL_FAMILIES = tuple(
    {
        f.name: f
        for group in (
            GATEWAY_FAMILIES,
            POOL_FAMILIES,
            ORCHESTRATOR_FAMILIES,
            STORE_FAMILIES,
            FORWARD_FAMILIES,
        )
        for f in group
    }.values()
)
"""Each family once (``transcode_seconds_total`` is the gateway's and the orchestrator's)."""
