"""JetStream: streams and consumers persisted in the storage package, served on ``$JS.API``.

``JetStream`` (manager.py) runs in every worker, each running the streams it owns (shards.py);
api.py answers the API
subjects, stream.py captures publishes, consumer.py delivers them. errors.py is the API error
catalogue.
"""
from natsx.jetstream.errors import ApiError, error
from natsx.jetstream.manager import JetStream

__all__ = ["ApiError", "JetStream", "error"]
