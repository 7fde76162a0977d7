"""Subject -> subscription matching: the sublist and the subject helpers.

The implementation is the compiled ``natsx._speedups._sublist`` unless ``NATSX_NO_EXTENSIONS``
is set, in which case it is its pure-Python twin ``natsx._speedups.sublist_py``; both have
the same API and behaviour (see their theory-of-operation headers). ``IMPLEMENTATION`` names
the one in use.
"""
from natsx._speedups import load

_impl = load("sublist")

IMPLEMENTATION: str = _impl.__name__

CACHE_MAX = _impl.CACHE_MAX
CACHE_SWEEP = _impl.CACHE_SWEEP
Subscription = _impl.Subscription
SublistResult = _impl.SublistResult
Sublist = _impl.Sublist
is_valid_subject = _impl.is_valid_subject
is_valid_literal_subject = _impl.is_valid_literal_subject
is_valid_publish_subject = _impl.is_valid_publish_subject
is_valid_queue = _impl.is_valid_queue
subject_is_literal = _impl.subject_is_literal
match_literal = _impl.match_literal
subjects_collide = _impl.subjects_collide
is_subset_match = _impl.is_subset_match
num_tokens = _impl.num_tokens

__all__ = [
    "IMPLEMENTATION",
    "CACHE_MAX",
    "CACHE_SWEEP",
    "Subscription",
    "SublistResult",
    "Sublist",
    "is_valid_subject",
    "is_valid_literal_subject",
    "is_valid_publish_subject",
    "is_valid_queue",
    "subject_is_literal",
    "match_literal",
    "subjects_collide",
    "is_subset_match",
    "num_tokens",
]
