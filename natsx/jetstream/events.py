"""JetStream advisories and metrics: ``$JS.EVENT.ADVISORY.>`` and ``$JS.EVENT.METRIC.>``.

Theory of operation
-------------------
Go publishes an advisory (server/jetstream_events.go ``publishAdvisory``) only when the
account has interest in its subject, as a JSON ``TypedEvent`` (``type``, ``id``,
``timestamp``) followed by the event's own fields in struct order, ``domain`` where the
struct has it. ``Events`` builds the same documents; each builder names its subject and type
as Go's constants do (jetstream_api.go ``JSAdvisory*Pre``, ``JSMetricConsumerAckPre``).
Events go to the JetStream outbox, so they leave after the batch's commit, like the API
responses they describe. Nothing is built when nobody listens: an interest check on the
account's sublist comes first.
"""
from __future__ import annotations

import json
import random
import time

from natsx.jetstream.util import random_id, rfc3339

ADVISORY = "io.nats.jetstream.advisory.v1."
ADV = "$JS.EVENT.ADVISORY."


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).translate(
        str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})).encode()


def sample_freq(cfg: dict) -> int:
    """Go's consumer ``sfreq``: ``sample_freq`` as a percentage (``"50%"`` or ``"50"``)."""
    sf = (cfg.get("sample_freq") or "").strip().rstrip("%")
    try:
        return int(sf) if sf else 0
    except ValueError:
        return 0


class Events:
    """Advisories of one JetStream; see the module docstring."""

    def __init__(self, js) -> None:
        self.js = js

    def publish(self, account: str, subject: str, type_: str, fields: dict,
                domain_before: str | None = None) -> bool:
        """Send one event if ``account`` has interest in ``subject``. ``domain`` goes last
        unless ``domain_before`` names the field it precedes (Go's struct order)."""
        js = self.js
        subj = subject.encode("utf-8", "surrogateescape")
        if not js.has_interest(account, subj):
            return False
        body = {"type": type_, "id": random_id(22), "timestamp": rfc3339(time.time_ns())}
        domain = js.domain
        for k, v in fields.items():
            if k == domain_before and domain:
                body["domain"] = domain
            body[k] = v
        if domain and "domain" not in body:
            body["domain"] = domain
        js.send(account, subj, None, _dumps(body))
        return True

    # -- API -----------------------------------------------------------------------------------

    def api_audit(self, account: str, subject: str, request: bytes, response: bytes,
                  client: dict | None) -> None:
        js = self.js
        if not js.has_interest(account, b"$JS.EVENT.ADVISORY.API"):
            return
        fields = {"server": js.server.server_name, "client": client or {},
                  "subject": subject}
        if request:
            fields["request"] = request.decode("utf-8", "replace")
        fields["response"] = response.decode("utf-8", "replace")
        self.publish(account, ADV + "API", ADVISORY + "api_audit", fields)

    def stream_action(self, account: str, stream: str, action: str) -> None:
        kind = {"create": "CREATED", "delete": "DELETED", "modify": "UPDATED"}[action]
        self.publish(account, f"{ADV}STREAM.{kind}.{stream}", ADVISORY + "stream_action",
                     {"stream": stream, "action": action})

    def consumer_action(self, account: str, stream: str, consumer: str, action: str) -> None:
        kind = {"create": "CREATED", "delete": "DELETED", "modify": "UPDATED"}[action]
        self.publish(account, f"{ADV}CONSUMER.{kind}.{stream}.{consumer}",
                     ADVISORY + "consumer_action",
                     {"stream": stream, "consumer": consumer, "action": action})

    def consumer_pause(self, account: str, stream: str, consumer: str, paused: bool,
                       until: str) -> None:
        # Go's time.Time field: omitempty does not drop the zero time.
        fields = {"stream": stream, "consumer": consumer, "paused": paused,
                  "pause_until": until}
        self.publish(account, f"{ADV}CONSUMER.PAUSE.{stream}.{consumer}",
                     ADVISORY + "consumer_pause", fields)

    def consumer_pinned(self, consumer, group: str) -> None:
        stream, name = consumer.stream.name, consumer.name
        self.publish(consumer.account_name, f"{ADV}CONSUMER.PINNED.{stream}.{name}",
                     ADVISORY + "consumer_group_pinned",
                     {"account": consumer.account_name, "stream": stream, "consumer": name,
                      "group": group, "pinned_id": consumer.pin_id}, domain_before="group")

    def consumer_unpinned(self, consumer, group: str, reason: str) -> None:
        stream, name = consumer.stream.name, consumer.name
        self.publish(consumer.account_name, f"{ADV}CONSUMER.UNPINNED.{stream}.{name}",
                     ADVISORY + "consumer_group_unpinned",
                     {"account": consumer.account_name, "stream": stream, "consumer": name,
                      "group": group, "reason": reason}, domain_before="group")

    def batch_abandoned(self, account: str, stream: str, batch_id: str, reason: str) -> None:
        """Go's sendStreamBatchAbandonedAdvisory: to the account (unless it is the system
        account), then to the system account with the account's name."""
        from natsx.server.accounts import system_account_name

        subject = f"{ADV}STREAM.BATCH_ABANDONED.{stream}"
        type_ = ADVISORY + "stream_batch_abandoned"
        fields = {"stream": stream, "batch": batch_id, "reason": reason}
        system = system_account_name(self.js.server.options)
        if account != system:
            self.publish(account, subject, type_, fields, domain_before="batch")
        if system:
            self.publish(system, subject, type_, {"account": account, **fields},
                         domain_before="batch")

    # -- consumers -----------------------------------------------------------------------------

    def consumer_event(self, consumer, kind: str, event: dict) -> None:
        """MAX_DELIVERIES, MSG_NAKED, MSG_TERMINATED: ``event`` carries its ``type``."""
        event = dict(event)
        type_ = event.pop("type")
        self.publish(consumer.account_name,
                     f"{ADV}CONSUMER.{kind}.{consumer.stream.name}.{consumer.name}", type_, event)

    def ack_sample(self, consumer, sseq: int, dseq: int, dc: int, delivered_ns: int) -> None:
        """Go's sampleAck: a ``consumer_ack`` metric for ``sample_freq`` percent of acks."""
        freq = consumer.sfreq
        if freq <= 0 or (freq < 100 and random.randrange(100) > freq):
            return
        self.publish(consumer.account_name,
                     f"$JS.EVENT.METRIC.CONSUMER.ACK.{consumer.stream.name}.{consumer.name}",
                     "io.nats.jetstream.metric.v1.consumer_ack",
                     {"stream": consumer.stream.name, "consumer": consumer.name,
                      "consumer_seq": dseq, "stream_seq": sseq,
                      "ack_time": time.time_ns() - delivered_ns, "deliveries": dc})

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot_create(self, account: str, stream: str, state: dict, client: dict) -> None:
        self.publish(account, f"{ADV}STREAM.SNAPSHOT_CREATE.{stream}",
                     ADVISORY + "snapshot_create",
                     {"stream": stream, "state": state, "client": client})

    def snapshot_complete(self, account: str, stream: str, start: int, end: int,
                          client: dict, err: str = "") -> None:
        fields = {"stream": stream, "start": rfc3339(start), "end": rfc3339(end),
                  "client": client}
        if err:
            fields["error"] = err
        self.publish(account, f"{ADV}STREAM.SNAPSHOT_COMPLETE.{stream}",
                     ADVISORY + "snapshot_complete", fields,
                     domain_before="error" if err else None)

    def restore_create(self, account: str, stream: str, client: dict) -> None:
        self.publish(account, f"{ADV}STREAM.RESTORE_CREATE.{stream}",
                     ADVISORY + "restore_create", {"stream": stream, "client": client})

    def restore_complete(self, account: str, stream: str, start: int, end: int, nbytes: int,
                         client: dict) -> None:
        self.publish(account, f"{ADV}STREAM.RESTORE_COMPLETE.{stream}",
                     ADVISORY + "restore_complete",
                     {"stream": stream, "start": rfc3339(start), "end": rfc3339(end),
                      "bytes": nbytes, "client": client})
