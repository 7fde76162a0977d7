# Declarations shared by the compiled sublist and the modules that cimport it (the hot path).

cdef class Subscription:
    cdef public bytes subject       # as subscribed; may hold * and > tokens
    cdef public object queue        # queue group name (bytes) or None
    cdef public bytes sid
    cdef public object client       # the delivery target; opaque to the sublist
    cdef public long long max_msgs  # auto-unsubscribe after this many deliveries; 0 = never
    cdef public long long delivered
    cdef public int weight          # queue weight (remote interest carries member counts)
    cdef public bint closed

cdef class SublistResult:
    cdef public list psubs          # list[Subscription]: plain subscribers
    cdef public list qsubs          # list[list[Subscription]]: one list per queue group

# Private: the trie (see the theory of operation in _sublist.pyx).
cdef class _Level

cdef class _Node:
    cdef _Level next                # None until a longer subject needs it
    cdef dict psubs                 # Subscription -> None, an ordered set
    cdef dict qsubs                 # queue name -> {Subscription: None}, or None
    cdef bint has_subs(self)
    cdef bint is_empty(self)

cdef class _Level:
    cdef dict nodes                 # literal token -> _Node
    cdef _Node pwc
    cdef _Node fwc
    cdef bint is_empty(self)
    cdef _Node child(self, bytes token)
    cdef _Node add_child(self, bytes token)
    cdef prune(self, _Node node, bytes token)
    cdef list children(self)

cdef class Sublist:
    cdef _Level _root
    cdef dict _cache
    cdef public unsigned long long genid
    cdef public unsigned long long inserts
    cdef public unsigned long long removes
    cdef public unsigned long long matches
    cdef public unsigned long long cache_hits
    cdef public Py_ssize_t count
    cdef public bint cache_enabled
    cpdef insert(self, Subscription sub)
    cpdef bint remove(self, Subscription sub)
    cpdef SublistResult match(self, bytes subject)
    cpdef bint has_interest(self, bytes subject)
    cdef SublistResult _match_miss(self, bytes subject)
    cdef bint _remove(self, Subscription sub) except -1
    cdef int _add_to_cache(self, bytes subject, Subscription sub) except -1
    cdef int _remove_from_cache(self, bytes subject) except -1
