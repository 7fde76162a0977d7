# C-level view of the ring for modules that cimport it (the hot path writes and drains
# records without creating Python objects per record).
from libc.stdint cimport uint32_t, uint64_t
from cpython.buffer cimport Py_buffer

cdef struct _Field:
    const char *ptr
    Py_ssize_t size
    bint held
    Py_buffer view

cdef struct RecordView:
    int kind
    uint32_t aux
    const unsigned char *field[5]   # account, subject, reply, headers, payload
    Py_ssize_t size[5]

cdef class Ring:
    cdef Py_buffer _view
    cdef bint _held
    cdef bint _busy
    cdef char *_base
    cdef unsigned char *_data
    cdef uint64_t *_tail
    cdef uint64_t *_head
    cdef uint32_t *_waiting
    cdef uint64_t _cap
    cdef uint64_t _mask
    cdef uint64_t _max_record
    cdef uint64_t _head_seen
    cdef uint64_t _tail_seen
    cdef uint64_t _rhead            # consumer: next record to read in a C-level batch
    cdef uint64_t _rpublished       # consumer: head as last published in that batch
    cdef int _check_open(self) except -1
    cdef int _append(self, uint64_t *tail, int kind, uint32_t aux, _Field *f) except -1
    cdef Py_ssize_t _read(self, Py_ssize_t max_records, list out, object callback) except -1
    cdef int write_c(self, int kind, uint32_t aux,
                     const char *account, Py_ssize_t alen,
                     const char *subject, Py_ssize_t slen,
                     const char *reply, Py_ssize_t rlen,
                     const char *headers, Py_ssize_t hlen,
                     const char *payload, Py_ssize_t plen) except -1
    cdef int begin_read_c(self) except -1
    cdef int next_c(self, RecordView *rv) except -1
    cdef void end_read_c(self)
