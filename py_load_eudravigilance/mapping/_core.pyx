# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# distutils: language = c++
"""The compiled staging core: walks lxml's own tree in C and writes staged binary COPY rows.

It evaluates the dictionary's paths as ``paths.py`` parses them (steps, predicates, unions, variable
starts, ``ancestor::``), selects each row's fields in one walk of the row's trie (the Python
mapper's own tries, slot for slot), converts values as ``mapping/values.py`` does and writes the
bytes ``staging/copybinary.py`` would. Only libxml2's node structs are read; no libxml2 function is
called, so the extension links against nothing but Python. Whatever it cannot do exactly (a
computed field, an attachment, a value its fast paths do not parse) it hands to the Python
mapper's own code for that field. ``tests/test_compiled.py`` checks that both cores write the same
bytes for every table.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free
from libc.math cimport isfinite
from libc.stdlib cimport abort, realloc, strtoll
from libc.string cimport memcmp, memcpy, strcmp, strcspn, strlen
from libcpp cimport bool as cbool
from libcpp.algorithm cimport sort as std_sort
from libcpp.string cimport string
from libcpp.unordered_map cimport unordered_map
from libcpp.unordered_set cimport unordered_set
from libcpp.memory cimport make_shared, shared_ptr
from libcpp.utility cimport pair
from cython.operator cimport dereference as deref
from libcpp.vector cimport vector

from lxml.includes.etreepublic cimport _Document, _Element, elementFactory, import_lxml__etree
from lxml.includes.tree cimport (
    XML_CDATA_SECTION_NODE,
    XML_ELEMENT_NODE,
    XML_TEXT_NODE,
    xmlAttr,
    xmlChar,
    xmlNode,
    xmlNs,
)

import_lxml__etree()

from cpython.ref cimport PyObject

cdef extern from "Python.h":
    # overflow_exception NULL: an out-of-range value is +-inf, as float() gives it
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0


from libc.stdio cimport snprintf

# Axes, path starts, row sources, field modes, kinds and roles: the plan staging/compiled.py builds uses these numbers
cdef enum:
    CHILD, DESCENDANT, ANCESTOR
cdef enum:
    START_CONTEXT, START_VARIABLE, START_UNION
cdef enum:
    ROWS_ROOT, ROWS_SLOT, ROWS_EXPRESSION, ROWS_VALUES
cdef enum:
    FIELD_SLOT, FIELD_EXPRESSION, FIELD_VARIABLE, FIELD_PYTHON
cdef enum:
    KIND_TEXT, KIND_CODE, KIND_DATE, KIND_BOOL, KIND_NUMBER, KIND_INTEGER, KIND_ATTACHMENT
cdef enum:
    NOT_KEYED = -2
cdef enum:
    ROLE_NONE, ROLE_CASE_ID, ROLE_MOST_RECENT, ROLE_CREATION, ROLE_NULLIFICATION

PLAN_CODES = {
    "child": CHILD, "descendant": DESCENDANT, "ancestor": ANCESTOR,
    "start_context": START_CONTEXT, "start_variable": START_VARIABLE, "start_union": START_UNION,
    "rows_root": ROWS_ROOT, "rows_slot": ROWS_SLOT, "rows_expression": ROWS_EXPRESSION, "rows_values": ROWS_VALUES,
    "field_slot": FIELD_SLOT, "field_expression": FIELD_EXPRESSION, "field_variable": FIELD_VARIABLE, "field_python": FIELD_PYTHON,
    "text": KIND_TEXT, "code": KIND_CODE, "date": KIND_DATE, "bool": KIND_BOOL, "number": KIND_NUMBER, "integer": KIND_INTEGER,
    "attachment": KIND_ATTACHMENT,
    "role_none": ROLE_NONE, "role_case_id": ROLE_CASE_ID, "role_most_recent": ROLE_MOST_RECENT, "role_creation": ROLE_CREATION,
    "role_nullification": ROLE_NULLIFICATION,
}

# The message facts the core writes into staged bookkeeping columns (catalog.Fact), and the binary COPY family
# each is written as: staging/compiled.py turns the catalog's audit row and master tail into these codes, and
# falls back to the Python mapper when the catalog names a fact, or a family, the core does not write
cdef enum:
    FACT_CASE_ID, FACT_FILE_SHA256, FACT_FILE_NAME, FACT_POSITION, FACT_MOST_RECENT, FACT_CREATION, FACT_NULLIFICATION,
    FACT_VERSION_COUNT, FACT_ROW_COUNTS, FACT_PAYLOAD

MESSAGE_FACTS = {
    "case_id": (FACT_CASE_ID, "text"), "file_sha256": (FACT_FILE_SHA256, "text"), "file_name": (FACT_FILE_NAME, "text"),
    "position": (FACT_POSITION, "integer"), "most_recent_info": (FACT_MOST_RECENT, "timestamp"),
    "creation_time": (FACT_CREATION, "timestamp"), "is_nullification": (FACT_NULLIFICATION, "boolean"),
    "version_count": (FACT_VERSION_COUNT, "integer"), "row_counts": (FACT_ROW_COUNTS, "json"), "payload": (FACT_PAYLOAD, "text"),
}

cdef class Path
cdef class Level
ctypedef xmlNs* NsPointer
ctypedef xmlNode* NodePointer
ctypedef vector[NodePointer] Nodes
ctypedef unordered_map[string, Nodes] KeyIndex
ctypedef vector[vector[xmlNode*]] Selection


# -- names, attributes, text ----------------------------------------------------------------------

# Keyed paths drop their indexes when it changes, and names what they matched (a new message: a pointer freed with
# the last one may come back naming something else)
cdef long long MESSAGE_SERIAL = 0


cdef class Name:
    """A qualified name as C strings: ``ns`` is NULL for no namespace."""

    cdef bytes _ns
    cdef bytes _local
    cdef const char* ns
    cdef const char* local
    # libxml2 interns names and elements share their namespace's struct: pointers that matched in this message match
    cdef const xmlChar* matched_local
    cdef xmlNs* matched_ns
    cdef long long matched_serial

    def __init__(self, str clark):
        if clark.startswith("{"):
            namespace, local = clark[1:].split("}", 1)
            self._ns = namespace.encode("utf-8")
            self.ns = PyBytes_AS_STRING(self._ns)
        else:
            local = clark
            self._ns = None
            self.ns = NULL
        self._local = local.encode("utf-8")
        self.local = PyBytes_AS_STRING(self._local)


cdef inline bint is_element(xmlNode* node) noexcept nogil:
    return node.type == XML_ELEMENT_NODE


cdef inline bint element_named(xmlNode* node, Name name) noexcept:
    cdef const char* local = <const char*>node.name
    if name.matched_serial != MESSAGE_SERIAL:
        name.matched_local, name.matched_ns, name.matched_serial = <const xmlChar*>NULL, <xmlNs*>NULL, MESSAGE_SERIAL
    if node.name != name.matched_local:
        if local[0] != name.local[0] or strcmp(local, name.local) != 0:
            return False
        name.matched_local = node.name
    if name.ns == NULL:
        return node.ns == NULL
    if node.ns == NULL:
        return False
    if node.ns != name.matched_ns:
        if strcmp(<const char*>node.ns.href, name.ns) != 0:
            return False
        name.matched_ns = node.ns
    return True


cdef xmlAttr* find_attribute(xmlNode* node, Name name) noexcept:
    cdef xmlAttr* attribute = node.properties
    while attribute != NULL:
        if strcmp(<const char*>attribute.name, name.local) == 0:
            if name.ns == NULL:
                if attribute.ns == NULL:
                    return attribute
            elif attribute.ns != NULL and strcmp(<const char*>attribute.ns.href, name.ns) == 0:
                return attribute
        attribute = attribute.next
    return NULL


cdef void attribute_value(xmlAttr* attribute, string& out) noexcept:
    out.clear()
    cdef xmlNode* part = attribute.children
    while part != NULL:
        if part.content != NULL:
            out.append(<const char*>part.content)
        part = part.next


cdef const char* attribute_text(xmlAttr* attribute) noexcept:
    """The value of an attribute held by one text node (as the parser leaves them), else NULL."""
    cdef xmlNode* part = attribute.children
    if part == NULL:
        return ""
    if part.next == NULL and part.content != NULL:
        return <const char*>part.content
    return NULL


cdef int compare_attribute(xmlNode* node, Name name, const char* expected, size_t n) noexcept:
    """1 when the node's attribute equals ``expected``, 0 when it differs, -1 when the node has no such attribute."""
    cdef xmlAttr* attribute = find_attribute(node, name)
    cdef const char* text
    cdef string value
    if attribute == NULL:
        return -1
    text = attribute_text(attribute)
    if text == NULL:
        attribute_value(attribute, value)
        return value.size() == n and memcmp(value.data(), expected, n) == 0
    return strlen(text) == n and memcmp(text, expected, n) == 0


cdef bint get_attribute(xmlNode* node, Name name, string& out) noexcept:
    """Like lxml's ``node.get(name)``: False when the attribute is absent."""
    cdef xmlAttr* attribute = find_attribute(node, name)
    if attribute == NULL:
        return False
    attribute_value(attribute, out)
    return True


cdef void string_value(xmlNode* node, string& out) noexcept:
    """XPath string-value: the text and CDATA of every descendant, in document order."""
    out.clear()
    cdef xmlNode* current = node.children
    if current == NULL:
        return
    while current != NULL:
        if current.type == XML_TEXT_NODE or current.type == XML_CDATA_SECTION_NODE:
            if current.content != NULL:
                out.append(<const char*>current.content)
        elif current.type == XML_ELEMENT_NODE and current.children != NULL:
            current = current.children
            continue
        while current.next == NULL and current != node:
            current = current.parent
            if current == node:
                return
        if current == node:
            return
        current = current.next


cdef inline int utf8_decode(const unsigned char* s, size_t n, size_t* length) noexcept:
    """The code point starting at ``s`` and its length in bytes (invalid bytes count as themselves)."""
    cdef unsigned char c = s[0]
    if c < 0x80 or n < 2:
        length[0] = 1
        return c
    if c >= 0xF0 and n >= 4:
        length[0] = 4
        return ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F)
    if c >= 0xE0 and n >= 3:
        length[0] = 3
        return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F)
    length[0] = 2
    return ((c & 0x1F) << 6) | (s[1] & 0x3F)


cdef inline bint is_space(int code) noexcept nogil:
    """Python's ``str.isspace()``: what ``str.strip()`` removes."""
    if code <= 0x20:
        return code == 0x20 or 0x09 <= code <= 0x0D or 0x1C <= code <= 0x1F
    if code < 0x85:
        return False
    return (
        code == 0x85 or code == 0xA0 or code == 0x1680 or 0x2000 <= code <= 0x200A
        or code == 0x2028 or code == 0x2029 or code == 0x202F or code == 0x205F or code == 0x3000
    )


cdef void strip(string& text) noexcept:
    """``str.strip()`` on UTF-8 text."""
    cdef const unsigned char* data = <const unsigned char*>text.data()
    cdef size_t n = text.size(), start = 0, end = n, length = 0, back
    while start < end:
        if not is_space(utf8_decode(data + start, end - start, &length)):
            break
        start += length
    while end > start:
        back = end - 1
        while back > start and (data[back] & 0xC0) == 0x80:
            back -= 1
        if not is_space(utf8_decode(data + back, end - back, &length)):
            break
        end = back
    if start or end != n:
        text.assign(text.substr(start, end - start))


def python_strip(bytes text):
    """The C strip, for tests against ``str.strip``."""
    cdef string value = text
    strip(value)
    return value


cdef inline bint is_xml_space(char c) noexcept nogil:
    return c == b' ' or c == b'\t' or c == b'\r' or c == b'\n'


cdef void collapse_token(string& text) noexcept:
    """``values.collapse_token``: runs of XML whitespace become one space, none at the ends."""
    cdef string out
    cdef size_t i
    cdef bint pending = False
    for i in range(text.size()):
        if is_xml_space(text[i]):
            pending = out.size() > 0
        else:
            if pending:
                out.push_back(b' ')
                pending = False
            out.push_back(text[i])
    text.swap(out)


# -- writing binary COPY tuples (staging/copybinary.py) -------------------------------------------

cdef inline void append_integer(string& out, long long value) noexcept:
    cdef char text[24]
    cdef int n = snprintf(text, 24, "%lld", value)
    out.append(text, n)


cdef inline void put_be16(string& out, unsigned int value) noexcept:
    out.push_back(<char>((value >> 8) & 0xFF))
    out.push_back(<char>(value & 0xFF))


cdef inline void put_be32(string& out, unsigned int value) noexcept:
    cdef char data[4]
    data[0] = <char>((value >> 24) & 0xFF)
    data[1] = <char>((value >> 16) & 0xFF)
    data[2] = <char>((value >> 8) & 0xFF)
    data[3] = <char>(value & 0xFF)
    out.append(data, 4)


cdef inline void put_be64(string& out, unsigned long long value) noexcept:
    put_be32(out, <unsigned int>(value >> 32))
    put_be32(out, <unsigned int>(value & 0xFFFFFFFF))


cdef inline void patch_be32(string& out, size_t at, unsigned int value) noexcept:
    out[at] = <char>((value >> 24) & 0xFF)
    out[at + 1] = <char>((value >> 16) & 0xFF)
    out[at + 2] = <char>((value >> 8) & 0xFF)
    out[at + 3] = <char>(value & 0xFF)


cdef class Row:
    """One row as a binary COPY tuple: its field count, then each field's length and bytes."""

    cdef string* out
    cdef size_t start
    cdef unsigned int fields

    cdef inline void begin(self, string* out) noexcept:
        self.out = out
        self.start = out.size()
        self.fields = 0
        out.append(b"\0\0", 2)  # the field count, filled in by end()

    cdef inline void null(self) noexcept:
        put_be32(self.out[0], 0xFFFFFFFF)
        self.fields += 1

    cdef inline void raw(self, const char* value, size_t n) noexcept:
        put_be32(self.out[0], <unsigned int>n)
        self.out.append(value, n)
        self.fields += 1

    cdef inline void text(self, const string& value) noexcept:
        """UTF-8 text; the empty string is NULL, as in copybinary.encode_value."""
        if value.size() == 0:
            self.null()
        else:
            self.raw(value.data(), value.size())

    cdef inline void integer(self, long long value) noexcept:
        put_be32(self.out[0], 4)
        put_be32(self.out[0], <unsigned int>value)
        self.fields += 1

    cdef inline void float8(self, double value) noexcept:
        cdef unsigned long long bits
        memcpy(&bits, &value, 8)
        put_be32(self.out[0], 8)
        put_be64(self.out[0], bits)
        self.fields += 1

    cdef inline void boolean(self, bint value) noexcept:
        put_be32(self.out[0], 1)
        self.out.push_back(1 if value else 0)
        self.fields += 1

    cdef inline void timestamp(self, long long micros) noexcept:
        put_be32(self.out[0], 8)
        put_be64(self.out[0], <unsigned long long>micros)
        self.fields += 1

    cdef inline void encoded(self, bytes field):
        """A field already encoded by copybinary.encode_value (length and bytes)."""
        self.out.append(PyBytes_AS_STRING(field), PyBytes_GET_SIZE(field))
        self.fields += 1

    cdef inline void end(self) noexcept:
        self.out[0][self.start] = <char>((self.fields >> 8) & 0xFF)
        self.out[0][self.start + 1] = <char>(self.fields & 0xFF)


# -- the audit payload: the message's XML as lxml's tostring() writes it -----------------------------

# The character references libxml2 writes for the characters it escapes
cdef const char* ENTITIES[256]
ENTITIES[b'&'], ENTITIES[b'<'], ENTITIES[b'>'] = b"&amp;", b"&lt;", b"&gt;"
ENTITIES[b'"'], ENTITIES[b'\t'], ENTITIES[b'\n'], ENTITIES[b'\r'] = b"&quot;", b"&#9;", b"&#10;", b"&#13;"


# The payload is written in many small pieces: a std::string append per piece (a call, its checks) cost more than
# the copying. It is written here instead (kept across messages: the walk holds the GIL) and appended at once
cdef struct Writer:
    char* data
    size_t size  # bytes written
    size_t capacity


cdef Writer PAYLOAD_WRITER


cdef bint make_room(Writer* w, size_t n) noexcept:
    cdef size_t capacity = 2 * w.capacity if 2 * w.capacity > w.size + n else w.size + n + 65536
    cdef char* data = <char*>realloc(w.data, capacity)
    if data == NULL:
        return False
    w.data, w.capacity = data, capacity
    return True


cdef inline void put(Writer* w, const char* s, size_t n) noexcept:
    if w.size + n > w.capacity and not make_room(w, n):
        abort()  # out of memory
    memcpy(w.data + w.size, s, n)
    w.size += n


cdef inline void put_char(Writer* w, char c) noexcept:
    if w.size + 1 > w.capacity and not make_room(w, 1):
        abort()
    w.data[w.size] = c
    w.size += 1


cdef inline void put_c_string(Writer* w, const char* s) noexcept:
    put(w, s, strlen(s))


cdef void put_xml_escaped(Writer* out, const xmlChar* text, bint attribute) noexcept:
    """libxml2's escaping: & < > everywhere, and in attribute values also " and the tab, LF and CR
    character references (in text only CR). UTF-8 passes through."""
    cdef const char* s = <const char*>text
    cdef const char* special = "&<>\r\"\n\t" if attribute else "&<>\r"
    cdef size_t run
    cdef char c
    while True:
        run = strcspn(s, special)  # vectorized in glibc: most text has nothing to escape
        put(out, s, run)
        s += run
        c = s[0]
        if c == 0:
            return
        s += 1
        put_c_string(out, ENTITIES[<unsigned char>c])


cdef inline bint plain_uri(const xmlChar* href) noexcept:
    """A namespace URI libxml2 writes as it is (it quotes, but does not escape, what it declares)."""
    cdef const unsigned char* s = <const unsigned char*>href
    cdef size_t i = 0
    while s[i] != 0:
        if s[i] == b'"' or s[i] == b'&' or s[i] == b'<' or s[i] == b'>':
            return False
        i += 1
    return True


cdef bint put_namespace(Writer* out, xmlNs* ns) noexcept:
    if ns.href == NULL or not plain_uri(ns.href):
        return False
    put(out, b" xmlns", 6)
    if ns.prefix != NULL:
        put_char(out, b':')
        put_c_string(out, <const char*>ns.prefix)
    put(out, b'="', 2)
    put_c_string(out, <const char*>ns.href)
    put_char(out, b'"')
    return True


cdef inline void put_name(Writer* out, xmlNs* ns, const xmlChar* name) noexcept:
    if ns != NULL and ns.prefix != NULL:
        put_c_string(out, <const char*>ns.prefix)
        put_char(out, b':')
    put_c_string(out, <const char*>name)


cdef void namespaces_from_outside(xmlNode* root, vector[xmlNs*]& outside) noexcept:
    """The namespaces the message's elements and attributes use that it does not declare itself (its batch root
    does), once each, in order of first use: an element's before its attributes', in document order. So libxml2
    declares them on a copy of the message, which is what ``reference.audit_payload`` serializes."""
    cdef unordered_set[NsPointer] declared, listed
    cdef xmlNode* node = root
    cdef xmlNs* ns
    cdef xmlNs* last = NULL  # the namespace just noted: most elements use their parent's, and noting it again does nothing
    cdef xmlAttr* attribute
    outside.clear()
    while True:
        if node.type == XML_ELEMENT_NODE:
            ns = node.nsDef
            while ns != NULL:
                declared.insert(ns)
                ns = ns.next
            if node.ns != last:
                note_outside(node.ns, declared, listed, outside)
                last = node.ns
            attribute = node.properties
            while attribute != NULL:
                if attribute.ns != NULL and attribute.ns != last:
                    note_outside(attribute.ns, declared, listed, outside)
                    last = attribute.ns
                attribute = attribute.next
            if node.children != NULL:
                node = node.children
                continue
        while node != root and node.next == NULL:
            node = node.parent
        if node == root:
            return
        node = node.next


cdef inline void note_outside(xmlNs* ns, unordered_set[NsPointer]& declared, unordered_set[NsPointer]& listed,
                              vector[xmlNs*]& outside) noexcept:
    if ns == NULL or declared.count(ns) or listed.count(ns):
        return
    if ns.prefix != NULL and strcmp(<const char*>ns.prefix, "xml") == 0:  # bound by XML itself, never declared
        return
    listed.insert(ns)
    outside.push_back(ns)


cdef bint serialize(xmlNode* root, string& into) noexcept:
    """``reference.audit_payload(root)`` (lxml's tostring() of a copy of the message), appended to ``into``;
    False (with ``into`` as it was) for what this does not write as libxml2 would: Python's is then used."""
    cdef Writer* out = &PAYLOAD_WRITER
    out.size = 0
    if not write_tree(root, out):
        return False
    into.append(out.data, out.size)
    return True


cdef bint write_tree(xmlNode* root, Writer* out) noexcept:
    cdef xmlNode* node = root
    cdef xmlNs* ns
    cdef xmlAttr* attribute
    cdef const char* value
    cdef vector[xmlNs*] outside
    cdef size_t i
    while True:
        if node.type == XML_ELEMENT_NODE:
            put_char(out, b'<')
            put_name(out, node.ns, node.name)
            ns = node.nsDef
            while ns != NULL:
                if not put_namespace(out, ns):
                    return False
                ns = ns.next
            if node == root:
                # Of the declarations in force around the message, those it uses (not every one its batch root makes)
                namespaces_from_outside(root, outside)
                for i in range(outside.size()):
                    if not put_namespace(out, outside[i]):
                        return False
            attribute = node.properties
            while attribute != NULL:
                value = attribute_text(attribute)
                if value == NULL:
                    return False
                put_char(out, b' ')
                put_name(out, attribute.ns, attribute.name)
                put(out, b'="', 2)
                put_xml_escaped(out, <const xmlChar*>value, True)
                put_char(out, b'"')
                attribute = attribute.next
            if node.children == NULL:
                put(out, b"/>", 2)
            else:
                put_char(out, b'>')
                node = node.children
                continue
        elif node.type == XML_TEXT_NODE:
            if node.content != NULL:
                put_xml_escaped(out, node.content, False)
        else:  # CDATA (the reader strips it), entity references, comments, PIs: tostring() knows them
            return False
        # Next: the sibling, or close the parents that end here
        while node != root and node.next == NULL:
            node = node.parent
            put(out, b"</", 2)
            put_name(out, node.ns, node.name)
            put_char(out, b'>')
        if node == root:
            return True
        node = node.next


def serialize_as_tostring(_Element element):
    """The C serializer's output, or None where it leaves the element to Python (for tests against audit_payload)."""
    cdef string out
    if not serialize(element._c_node, out):
        return None
    return <bytes>out


# -- variables ----------------------------------------------------------------------------------

cdef class Scope:
    """XPath variables in scope, by number: strings and node sets."""

    cdef vector[string] strings
    cdef vector[cbool] has_string
    # Node sets are shared by the scopes copied from the one that bound them (a drug's assessments, by each of
    # its reaction rows): a copy costs the number of variables, not the size of the sets
    cdef vector[shared_ptr[Nodes]] sets
    cdef vector[long long] set_ids  # a number per binding, never reused: what keyed paths' indexes are kept by
    cdef vector[cbool] has_set

    def __cinit__(self, int count=0):
        self.strings.resize(count)
        self.has_string.resize(count, False)
        self.sets.resize(count)
        self.set_ids.resize(count, 0)
        self.has_set.resize(count, False)

    cdef Scope copy(self):
        cdef Scope other = Scope.__new__(Scope)
        other.strings = self.strings
        other.has_string = self.has_string
        other.sets = self.sets
        other.set_ids = self.set_ids
        other.has_set = self.has_set
        return other

    cdef Nodes* bind_set(self, int variable) noexcept:
        """A new, empty node set bound to ``variable``, to be filled."""
        global SET_SERIAL
        SET_SERIAL += 1
        self.sets[variable] = make_shared[Nodes]()
        self.set_ids[variable] = SET_SERIAL
        self.has_set[variable] = True
        return self.sets[variable].get()


# -- document order -----------------------------------------------------------------------------

cdef int depth_of(xmlNode* node) noexcept:
    cdef int depth = 0
    while node.parent != NULL:
        node = node.parent
        depth += 1
    return depth


cdef bint before(xmlNode* a, xmlNode* b) noexcept:
    """Whether ``a`` precedes ``b`` in document order (an ancestor precedes its descendants)."""
    if a == b:
        return False
    cdef int depth_a = depth_of(a), depth_b = depth_of(b)
    cdef xmlNode* x = a
    cdef xmlNode* y = b
    while depth_a > depth_b:
        x = x.parent
        depth_a -= 1
    while depth_b > depth_a:
        y = y.parent
        depth_b -= 1
    if x == y:
        return depth_of(a) < depth_of(b)
    while x.parent != y.parent:
        x, y = x.parent, y.parent
    cdef xmlNode* sibling = x.next
    while sibling != NULL:
        if sibling == y:
            return True
        sibling = sibling.next
    return False


# Large node sets are ordered by each element's rank in a preorder walk of the message, computed once per message
# when first needed: ordering them with before() walks siblings per comparison, quadratic in the message's size
cdef unordered_map[NodePointer, size_t] RANKS
cdef xmlNode* RANKED_ROOT = NULL  # the message being staged (NULL: none, rank nothing)
cdef bint RANKED = False
cdef size_t SMALL_SET = 16  # up to this many nodes, insertion by before() is cheaper than ranking the message


cdef long long VISITS = 0  # nodes looked at by steps and walks: the work of mapping, for tests that it grows linearly


def node_visits():
    """How many nodes the core's steps and walks have looked at in this process."""
    return VISITS
cdef long long SET_SERIAL = 0


cdef void begin_ranking(xmlNode* message) noexcept:
    """A new message (or none): the ranks and indexes of the last one are dropped, its nodes may be freed."""
    global RANKED_ROOT, RANKED, MESSAGE_SERIAL
    MESSAGE_SERIAL += 1
    RANKS.clear()
    RANKED_ROOT = message
    RANKED = False


cdef bint document_ranks(const vector[xmlNode*]& nodes, vector[pair[size_t, size_t]]& ranked) noexcept:
    """(rank, index) of each node; False when some node lies outside the message being staged."""
    global RANKED
    cdef xmlNode* node
    cdef size_t i, rank = 0
    cdef unordered_map[NodePointer, size_t].iterator found
    if RANKED_ROOT == NULL:
        return False
    if not RANKED:
        node = RANKED_ROOT
        while True:
            if is_element(node):
                RANKS[node] = rank
                rank += 1
                if node.children != NULL:
                    node = node.children
                    continue
            while node != RANKED_ROOT and node.next == NULL:
                node = node.parent
            if node == RANKED_ROOT:
                break
            node = node.next
        RANKED = True
    ranked.clear()
    for i in range(nodes.size()):
        found = RANKS.find(nodes[i])
        if found == RANKS.end():
            return False
        ranked.push_back(pair[size_t, size_t](deref(found).second, i))
    return True


cdef void in_document_order(vector[xmlNode*]& nodes) noexcept:
    """Sort and deduplicate (unions, the ancestor axis, steps from nested nodes)."""
    cdef vector[xmlNode*] ordered
    cdef vector[pair[size_t, size_t]] ranked
    cdef size_t i, j
    cdef xmlNode* node
    if nodes.size() > SMALL_SET and document_ranks(nodes, ranked):
        std_sort(ranked.begin(), ranked.end())
        for i in range(ranked.size()):
            if i == 0 or ranked[i].first != ranked[i - 1].first:
                ordered.push_back(nodes[ranked[i].second])
        nodes.swap(ordered)
        return
    for i in range(nodes.size()):
        node = nodes[i]
        j = 0
        while j < ordered.size() and ordered[j] != node and before(ordered[j], node):
            j += 1
        if j < ordered.size() and ordered[j] == node:
            continue
        ordered.insert(ordered.begin() + j, node)
    nodes.swap(ordered)


# -- predicates ---------------------------------------------------------------------------------

cdef class Predicate:
    cdef bint test(self, xmlNode* node, Scope scope) except -1:
        raise NotImplementedError


cdef class AttributeKey(Predicate):
    """The node, or one of its children named ``child``, has these attribute values."""

    cdef Name child
    cdef list names
    cdef list values

    def __init__(self, child, names, values):
        self.child = Name(child) if child is not None else None
        self.names = [Name(name) for name in names]
        self.values = [value.encode("utf-8") for value in values]

    cdef bint matches(self, xmlNode* node) except -1:
        cdef Name name
        cdef bytes expected
        cdef Py_ssize_t i
        for i in range(len(self.names)):
            name = <Name>self.names[i]
            expected = <bytes>self.values[i]
            if compare_attribute(node, name, PyBytes_AS_STRING(expected), PyBytes_GET_SIZE(expected)) != 1:
                return False
        return True

    cdef bint test(self, xmlNode* node, Scope scope) except -1:
        if self.child is None:
            return self.matches(node)
        cdef xmlNode* child = node.children
        while child != NULL:
            if is_element(child) and element_named(child, self.child) and self.matches(child):
                return True
            child = child.next
        return False


cdef class Exists(Predicate):
    cdef Path path

    def __init__(self, Path path):
        self.path = path

    cdef bint test(self, xmlNode* node, Scope scope) except -1:
        return self.path.any_value(node, scope, NULL, 0, False)


cdef class Equals(Predicate):
    """Some string-value the path selects equals the literal, or the string variable."""

    cdef Path path
    cdef bytes literal
    cdef int variable

    def __init__(self, Path path, literal, int variable):
        self.path = path
        self.literal = literal.encode("utf-8") if literal is not None else None
        self.variable = variable

    cdef bint test(self, xmlNode* node, Scope scope) except -1:
        if self.literal is not None:
            return self.path.any_value(node, scope, PyBytes_AS_STRING(self.literal), PyBytes_GET_SIZE(self.literal), False)
        if self.variable < 0 or not scope.has_string[self.variable]:
            return False
        cdef string* expected = &scope.strings[self.variable]
        return self.path.any_value(node, scope, expected.data(), expected.size(), False)


cdef class StartsWith(Predicate):
    cdef Path path
    cdef bytes prefix

    def __init__(self, Path path, str prefix):
        self.path = path
        self.prefix = prefix.encode("utf-8")

    cdef bint test(self, xmlNode* node, Scope scope) except -1:
        return self.path.any_value(node, scope, PyBytes_AS_STRING(self.prefix), PyBytes_GET_SIZE(self.prefix), True)


cdef class Not(Predicate):
    cdef Predicate term

    def __init__(self, Predicate term):
        self.term = term

    cdef bint test(self, xmlNode* node, Scope scope) except -1:
        return not self.term.test(node, scope)


cdef class Combination(Predicate):
    """``a and b and ...`` (``any_`` false) or ``a or b or ...`` (``any_`` true)."""

    cdef list terms
    cdef bint any_

    def __init__(self, terms, bint any_):
        self.terms = list(terms)
        self.any_ = any_

    cdef bint test(self, xmlNode* node, Scope scope) except -1:
        cdef Py_ssize_t i
        for i in range(len(self.terms)):
            if (<Predicate>self.terms[i]).test(node, scope) == self.any_:
                return self.any_  # the first true term decides an or, the first false one an and
        return not self.any_


# -- steps and paths ----------------------------------------------------------------------------

cdef class Step:
    cdef int axis
    cdef Name name
    cdef list predicates
    cdef int position  # 0: none

    def __init__(self, int axis, str tag, predicates, position):
        self.axis = axis
        self.name = Name(tag)
        self.predicates = list(predicates)
        self.position = position or 0

    cdef bint passes(self, xmlNode* node, Scope scope) except -1:
        cdef Py_ssize_t i
        for i in range(len(self.predicates)):
            if not (<Predicate>self.predicates[i]).test(node, scope):
                return False
        return True

    cdef int candidates(self, xmlNode* parent, Scope scope, vector[xmlNode*]& out) except -1:
        """The nodes this step selects from ``parent``, appended to ``out`` in document order."""
        cdef xmlNode* node
        cdef int count = 0
        cdef vector[xmlNode*] up
        cdef Py_ssize_t i
        global VISITS
        if self.axis == CHILD:
            node = parent.children
            while node != NULL:
                VISITS += 1
                if is_element(node) and element_named(node, self.name) and self.passes(node, scope):
                    count += 1
                    if self.position == 0 or count == self.position:
                        out.push_back(node)
                node = node.next
        elif self.axis == DESCENDANT:
            node = parent.children
            while node != NULL:
                VISITS += 1
                if is_element(node):
                    if element_named(node, self.name) and self.passes(node, scope):
                        out.push_back(node)
                    if node.children != NULL:
                        node = node.children
                        continue
                while node.next == NULL:
                    node = node.parent
                    if node == parent:
                        return 0
                node = node.next
        else:
            node = parent.parent
            while node != NULL and is_element(node):
                VISITS += 1
                if element_named(node, self.name) and self.passes(node, scope):
                    up.push_back(node)
                node = node.parent
            for i in range(<Py_ssize_t>up.size() - 1, -1, -1):
                out.push_back(up[i])
        return 0


cdef class Path:
    """A location path: steps from the context node, from a filtered node-set variable, or from a union."""

    cdef int start
    cdef int variable
    cdef list filters
    cdef list union
    cdef list steps
    cdef Name attribute
    cdef vector[xmlNode*] current  # scratch, reused across calls (a path is never inside its own predicates)
    cdef vector[xmlNode*] following
    cdef vector[xmlNode*] selected
    cdef string value
    # A keyed path (paths.KeyedPath): one [key_path = $key_variable] on the start's filters (keyed_step -1) or on
    # step keyed_step (NOT_KEYED: none); its index of candidates by key value is built once per anchor
    cdef int keyed_step
    cdef Path key_path
    cdef int key_variable
    cdef list others  # the start's other filters (Predicate), or [the keyed step without the key (Step)]
    cdef unordered_map[size_t, KeyIndex] indexes  # anchor (a node, or a node set's id) -> index
    cdef long long indexes_serial

    def __init__(self, int start, int variable, filters, union, steps, attribute):
        self.start = start
        self.variable = variable
        self.filters = list(filters)
        self.union = list(union)
        self.steps = list(steps)
        self.attribute = Name(attribute) if attribute is not None else None
        self.keyed_step = NOT_KEYED

    def set_key(self, int keyed_step, Path key_path, int key_variable, others):
        self.keyed_step, self.key_path, self.key_variable, self.others = keyed_step, key_path, key_variable, list(others)

    cdef int select(self, xmlNode* context, Scope scope, vector[xmlNode*]& out) except -1:
        if self.keyed_step != NOT_KEYED:
            return self.select_keyed(context, scope, out)
        return self.select_steps(context, scope, out)

    cdef int select_keyed(self, xmlNode* context, Scope scope, vector[xmlNode*]& out) except -1:
        """``select`` by the index of the path's anchor: what the key selects for the variable's value."""
        cdef xmlNode* anchor = context
        cdef Nodes* source = NULL
        cdef Nodes reached, following
        cdef size_t key, j
        cdef Py_ssize_t i, first = 0
        cdef Step step
        out.clear()
        if self.keyed_step < 0:
            if self.variable < 0 or not scope.has_set[self.variable]:
                return 0
            source = scope.sets[self.variable].get()
            key = <size_t>scope.set_ids[self.variable]
        else:
            step = <Step>self.steps[0]
            if step.axis == ANCESTOR:
                step.candidates(context, scope, reached)
                if reached.size() != 1:
                    return self.select_steps(context, scope, out)
                anchor, first = reached[0], 1
            key = <size_t>anchor
        if self.indexes_serial != MESSAGE_SERIAL:
            self.indexes.clear()
            self.indexes_serial = MESSAGE_SERIAL
        cdef unordered_map[size_t, KeyIndex].iterator built = self.indexes.find(key)
        if built == self.indexes.end():
            self.build_index(anchor, source, first, scope, self.indexes[key])
            built = self.indexes.find(key)
        if self.key_variable < 0 or not scope.has_string[self.key_variable]:
            return 0
        cdef KeyIndex.iterator found = deref(built).second.find(scope.strings[self.key_variable])
        if found == deref(built).second.end():
            return 0
        out = deref(found).second
        for i in range(self.keyed_step + 1, len(self.steps)):  # child steps: in document order, each node once
            step = <Step>self.steps[i]
            following.clear()
            for j in range(out.size()):
                step.candidates(out[j], scope, following)
            out.swap(following)
        return 0

    cdef int build_index(self, xmlNode* anchor, Nodes* source, Py_ssize_t first, Scope scope, KeyIndex& index) except -1:
        """The keyed step's nodes (or the set's members) that pass the other predicates, by their key values."""
        cdef Nodes current, following, candidates
        cdef vector[string] values
        cdef Py_ssize_t i, k
        cdef size_t j, v, w
        cdef bint kept
        cdef Step step
        if source != NULL:
            for j in range(source.size()):
                kept = True
                for k in range(len(self.others)):
                    if not (<Predicate>self.others[k]).test(source[0][j], scope):
                        kept = False
                        break
                if kept:
                    candidates.push_back(source[0][j])
        else:
            current.push_back(anchor)
            for i in range(first, self.keyed_step):
                step = <Step>self.steps[i]
                following.clear()
                for j in range(current.size()):
                    step.candidates(current[j], scope, following)
                current.swap(following)
            step = <Step>self.others[0]
            for j in range(current.size()):
                step.candidates(current[j], scope, candidates)
        for j in range(candidates.size()):
            self.key_path.strings(candidates[j], scope, values)
            for v in range(values.size()):
                kept = True
                for w in range(v):  # a node once per value
                    if values[w] == values[v]:
                        kept = False
                        break
                if kept:
                    index[values[v]].push_back(candidates[j])
        return 0

    cdef int select_steps(self, xmlNode* context, Scope scope, vector[xmlNode*]& out) except -1:
        """The elements the path's steps select (its trailing attribute aside), in document order."""
        cdef vector[xmlNode*]* source
        cdef vector[xmlNode*] current, following
        cdef Py_ssize_t i, k
        cdef size_t j
        cdef Step step
        cdef bint kept
        cdef bint nested = self.start != START_CONTEXT  # whether some node of ``current`` may lie inside another
        current.swap(self.current)
        following.swap(self.following)
        current.clear()
        out.clear()
        if self.start == START_CONTEXT:
            current.push_back(context)
        elif self.start == START_VARIABLE:
            if self.variable >= 0 and scope.has_set[self.variable]:
                source = scope.sets[self.variable].get()
                for j in range(source.size()):
                    kept = True
                    for k in range(len(self.filters)):
                        if not (<Predicate>self.filters[k]).test(source[0][j], scope):
                            kept = False
                            break
                    if kept:
                        current.push_back(source[0][j])
        else:
            for i in range(len(self.union)):
                (<Path>self.union[i]).select(context, scope, following)
                current.insert(current.end(), following.begin(), following.end())
            in_document_order(current)
        for i in range(len(self.steps)):
            if current.empty():
                break
            step = <Step>self.steps[i]
            following.clear()
            for j in range(current.size()):
                step.candidates(current[j], scope, following)
            # From nested nodes a step's results interleave (a child of an outer node may follow the children of an
            # inner one) and repeat (descendants): XPath gives them in document order, once each
            if current.size() > 1 and (nested or step.axis == ANCESTOR):
                in_document_order(following)
            nested = nested or step.axis != CHILD
            current.swap(following)
        out.swap(current)
        current.clear()
        self.current.swap(current)
        self.following.swap(following)
        return 0

    cdef bint any_value(self, xmlNode* context, Scope scope, const char* expected, size_t n, bint prefix) except -1:
        """Whether some string-value the path selects equals ``expected`` (or starts with it); any value at all
        when ``expected`` is NULL. Compared in place: predicates run for every candidate node."""
        cdef vector[xmlNode*] nodes
        cdef size_t i
        cdef int found
        cdef xmlAttr* attribute
        cdef const char* text
        cdef bint result = False
        nodes.swap(self.selected)
        self.select(context, scope, nodes)
        for i in range(nodes.size()):
            if self.attribute is not None:
                attribute = find_attribute(nodes[i], self.attribute)
                if attribute == NULL:
                    continue
                if expected == NULL:
                    result = True
                    break
                text = attribute_text(attribute)
                if text == NULL:
                    attribute_value(attribute, self.value)
                else:
                    self.value.assign(text)
            else:
                if expected == NULL:
                    result = True
                    break
                string_value(nodes[i], self.value)
            if (self.value.size() == n or (prefix and self.value.size() >= n)) and memcmp(self.value.data(), expected, n) == 0:
                result = True
                break
        self.selected.swap(nodes)
        return result

    cdef int strings(self, xmlNode* context, Scope scope, vector[string]& out) except -1:
        """String-values of what the path selects: attribute values, or elements' text."""
        cdef vector[xmlNode*] nodes
        cdef string value
        cdef size_t i
        out.clear()
        self.select(context, scope, nodes)
        for i in range(nodes.size()):
            if self.attribute is not None:
                if get_attribute(nodes[i], self.attribute, value):
                    out.push_back(value)
            else:
                string_value(nodes[i], value)
                out.push_back(value)
        return 0


# -- the trie of a row's paths ------------------------------------------------------------------

cdef class Branch:
    cdef Step step
    cdef Level level
    cdef int counter  # index of this branch's position counter in its level, -1 without a position

    def __init__(self, Step step, Level level, int counter):
        self.step, self.level, self.counter = step, level, counter


cdef class TagGroup:
    cdef Name name
    cdef list branches

    def __init__(self, str tag, branches):
        self.name = Name(tag)
        self.branches = list(branches)


cdef class Level:
    cdef vector[int] slots
    cdef list groups  # TagGroup: child steps by tag
    cdef list descendants  # Branch
    cdef int counters
    cdef bint has_steps

    def __init__(self, slots, groups, descendants, int counters):
        for slot in slots:
            self.slots.push_back(slot)
        self.groups = list(groups)
        self.descendants = list(descendants)
        if counters >= 64:
            raise ValueError("more than 63 positional steps after one step")
        self.counters = counters
        self.has_steps = bool(self.groups) or bool(self.descendants)


cdef int walk(xmlNode* node, Level level, Scope scope, Selection& found) except -1:
    cdef int counts[64]  # a level has at most a few steps with a position (the plan checks: < 64)
    cdef xmlNode* child
    cdef Py_ssize_t g, b
    cdef TagGroup group
    cdef Branch branch
    cdef Step step
    global VISITS
    if level.groups:
        for g in range(level.counters):
            counts[g] = 0
        child = node.children
        while child != NULL:
            VISITS += 1
            if is_element(child):
                for g in range(len(level.groups)):
                    group = <TagGroup>level.groups[g]
                    if not element_named(child, group.name):
                        continue
                    for b in range(len(group.branches)):
                        branch = <Branch>group.branches[b]
                        step = branch.step
                        if step.predicates and not step.passes(child, scope):
                            continue
                        if branch.counter >= 0:
                            counts[branch.counter] += 1
                            if counts[branch.counter] != step.position:
                                continue
                        reached(child, branch.level, scope, found)
                    break
            child = child.next
    cdef vector[xmlNode*] below
    cdef size_t i
    if level.descendants:
        for b in range(len(level.descendants)):
            branch = <Branch>level.descendants[b]
            below.clear()
            branch.step.candidates(node, scope, below)
            for i in range(below.size()):
                reached(below[i], branch.level, scope, found)
    return 0


cdef inline int reached(xmlNode* node, Level level, Scope scope, Selection& found) except -1:
    cdef size_t i
    for i in range(level.slots.size()):
        found[level.slots[i]].push_back(node)
    if level.has_steps:
        walk(node, level, scope, found)
    return 0


cdef class Trie:
    cdef Level root
    cdef int size

    def __init__(self, Level root, int size):
        self.root, self.size = root, size

    cdef int select(self, xmlNode* node, Scope scope, Selection& found) except -1:
        cdef size_t i
        if found.size() != <size_t>self.size:
            found.resize(self.size)
        for i in range(found.size()):
            found[i].clear()
        for i in range(self.root.slots.size()):
            found[self.root.slots[i]].push_back(node)
        walk(node, self.root, scope, found)
        return 0


# -- tables and fields --------------------------------------------------------------------------

cdef class Field:
    cdef int mode
    cdef int slot
    cdef Path path
    cdef int variable
    cdef int kind
    cdef Name attribute
    cdef bint null_flavor
    cdef bint code_system
    cdef bint join_all
    cdef bytes strip_prefix
    cdef int number  # for the Python mapper's code of this field
    cdef int role
    cdef int max_bytes  # an indexed text: longer values get the Python mapper's verdict (0: unbounded)

    def __init__(self, int mode, int slot, Path path, int variable, int kind, attribute, bint null_flavor, bint code_system,
                 bint join_all, strip_prefix, int number, int role, int max_bytes=0):
        self.mode, self.slot, self.path, self.variable, self.kind = mode, slot, path, variable, kind
        self.attribute = Name(attribute) if attribute is not None else None
        self.null_flavor, self.code_system, self.join_all = null_flavor, code_system, join_all
        self.strip_prefix = strip_prefix.encode("utf-8") if strip_prefix else None
        self.number, self.role, self.max_bytes = number, role, max_bytes


cdef class Bind:
    cdef int variable
    cdef bint string_of  # string(path): the first node's string-value; else the node set
    cdef Path path

    def __init__(self, int variable, bint string_of, Path path):
        self.variable, self.string_of, self.path = variable, string_of, path


cdef class Table:
    cdef int number  # in CASE_TABLE_NAMES
    cdef int rows
    cdef int row_slot
    cdef Path row_path
    cdef list value_paths  # ROWS_VALUES: attribute paths whose distinct values are the rows
    cdef int row_variable
    cdef bint repeated
    cdef list binds
    cdef Trie trie
    cdef list fields
    cdef list children
    cdef bint is_master
    cdef Selection selection

    def __init__(self, int number, int rows, int row_slot, Path row_path, value_paths, int row_variable, bint repeated,
                 binds, Trie trie, fields, children, bint is_master):
        self.number, self.rows, self.row_slot, self.row_path = number, rows, row_slot, row_path
        self.value_paths = list(value_paths)
        self.row_variable, self.repeated = row_variable, repeated
        self.binds, self.trie, self.fields, self.children = list(binds), trie, list(fields), list(children)
        self.is_master = is_master


# -- dates and numbers --------------------------------------------------------------------------

cdef inline long long days_from_civil(long long y, long long m, long long d) noexcept:
    y -= m <= 2
    cdef long long era = (y if y >= 0 else y - 399) // 400
    cdef long long yoe = y - era * 400
    cdef long long doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef long long doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline void civil_from_days(long long z, long long* y, long long* m, long long* d) noexcept:
    z += 719468
    cdef long long era = (z if z >= 0 else z - 146096) // 146097
    cdef long long doe = z - era * 146097
    cdef long long yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef long long doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef long long mp = (5 * doy + 2) // 153
    d[0] = doy - (153 * mp + 2) // 5 + 1
    m[0] = mp + (3 if mp < 10 else -9)
    y[0] = yoe + era * 400 + (m[0] <= 2)


cdef inline int days_in_month(long long y, long long m) noexcept:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


cdef inline int digits(const char* s, int n) noexcept:
    cdef int value = 0, i
    for i in range(n):
        value = value * 10 + (s[i] - 48)
    return value


cdef inline const char* precision_name(int parts) noexcept:
    if parts == 1:
        return "year"
    if parts == 2:
        return "month"
    if parts == 3:
        return "day"
    if parts == 4:
        return "hour"
    if parts == 5:
        return "minute"
    return "second"


cdef struct Instant:
    long long year, month, day, minutes, second, micro  # in UTC; minutes of the day
    long long micros  # since 2000-01-01 UTC, as PostgreSQL stores a timestamptz


cdef Instant instant_from_micros(long long micros) noexcept:
    cdef Instant instant
    cdef long long days, rest
    instant.micros = micros
    days = micros // 86400000000 if micros >= 0 else -((-micros + 86399999999) // 86400000000)
    rest = micros - days * 86400000000
    civil_from_days(days + 10957, &instant.year, &instant.month, &instant.day)
    instant.micro = rest % 1000000
    rest //= 1000000
    instant.second = rest % 60
    instant.minutes = rest // 60
    return instant


cdef void format_iso(const Instant& instant, string& out) noexcept:
    """``datetime.isoformat()`` of the UTC instant."""
    cdef char text[40]
    cdef int n
    if instant.micro:
        n = snprintf(text, 40, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%06lld+00:00", instant.year, instant.month, instant.day,
                     instant.minutes // 60, instant.minutes % 60, instant.second, instant.micro)
    else:
        n = snprintf(text, 40, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld+00:00", instant.year, instant.month, instant.day,
                     instant.minutes // 60, instant.minutes % 60, instant.second)
    out.assign(text, n)


cdef bint parse_timestamp(const string& text, Instant* utc, int* parts_found) noexcept:
    """``values.parse_ts`` on ASCII input: the UTC instant and the precision (1 year .. 6 second); False when the
    Python parser must decide (not ASCII, not a date, out of range)."""
    cdef const char* s = text.data()
    cdef int n = text.size(), i = 0, run = 0, parts, offset_minutes = 0, sign = 1, fraction_digits = 0, offset_digits
    cdef long long year, month = 1, day = 1, hour = 0, minute = 0, second = 0, micro = 0, days, total
    while run < n and 48 <= s[run] <= 57:
        run += 1
    if run < 4 or run > 14 or run % 2:
        return False
    parts = (run - 4) // 2 + 1
    year = digits(s, 4)
    if parts > 1:
        month = digits(s + 4, 2)
    if parts > 2:
        day = digits(s + 6, 2)
    if parts > 3:
        hour = digits(s + 8, 2)
    if parts > 4:
        minute = digits(s + 10, 2)
    if parts > 5:
        second = digits(s + 12, 2)
    i = run
    if i < n and s[i] == b'.':
        if run != 14:  # a fraction of a second only
            return False
        i += 1
        while i < n and 48 <= s[i] <= 57:
            if fraction_digits < 6:  # digits past microseconds are kept in the text only
                micro = micro * 10 + (s[i] - 48)
            fraction_digits += 1
            i += 1
        if fraction_digits == 0:
            return False
        while fraction_digits < 6:
            micro *= 10
            fraction_digits += 1
    if i < n:
        offset_digits = n - i - 1
        if offset_digits < 1 or offset_digits > 4 or (s[i] != b'+' and s[i] != b'-'):
            return False
        for run in range(i + 1, n):
            if not 48 <= s[run] <= 57:
                return False
        sign = 1 if s[i] == b'+' else -1
        # values.offset_minutes: H, HH, HMM or HHMM
        if offset_digits <= 2:
            offset_minutes = digits(s + i + 1, offset_digits) * 60
        else:
            if digits(s + n - 2, 2) > 59:
                return False
            offset_minutes = digits(s + i + 1, offset_digits - 2) * 60 + digits(s + n - 2, 2)
        if offset_minutes > 14 * 60:
            return False
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= days_in_month(year, month):
        return False
    if hour > 23 or minute > 59 or second > 59:
        return False
    days = days_from_civil(year, month, day)
    total = days * 1440 + hour * 60 + minute - sign * offset_minutes  # minutes since 1970, before it negative
    days = total // 1440 if total >= 0 else -((-total + 1439) // 1440)  # floor: C division truncates
    total -= days * 1440
    civil_from_days(days, &year, &month, &day)
    if year < 1 or year > 9999:
        return False
    utc.year, utc.month, utc.day, utc.minutes, utc.second, utc.micro = year, month, day, total, second, micro
    utc.micros = (((days - 10957) * 1440 + total) * 60 + second) * 1000000 + micro
    parts_found[0] = parts
    return True


cdef void ascii_lower(string& text) noexcept:
    """Lower-case ASCII letters (other bytes untouched: such a text is no HL7 boolean, and Python decides)."""
    cdef size_t i
    for i in range(text.size()):
        if 65 <= text[i] <= 90:
            text[i] = text[i] + 32


cdef bint simple_decimal(const string& text, bint integer) noexcept:
    """ASCII ``[+-]digits[.digits][e[+-]digits]`` (integers: ``[+-]digits``), the forms the C conversions take."""
    cdef size_t i = 0, n = text.size(), before = 0, after = 0
    cdef const char* s = text.data()
    if i < n and (s[i] == b'+' or s[i] == b'-'):
        i += 1
    while i < n and 48 <= s[i] <= 57:
        i += 1
        before += 1
    if integer:
        return before > 0 and before <= 18 and i == n
    if i < n and s[i] == b'.':
        i += 1
        while i < n and 48 <= s[i] <= 57:
            i += 1
            after += 1
    if before + after == 0:
        return False
    if i < n and (s[i] == b'e' or s[i] == b'E'):
        i += 1
        if i < n and (s[i] == b'+' or s[i] == b'-'):
            i += 1
        after = 0
        while i < n and 48 <= s[i] <= 57:
            i += 1
            after += 1
        if after == 0:
            return False
    return i == n


# -- the core -------------------------------------------------------------------------------------

cdef class Core:
    """Stages messages into per-table COPY text buffers; see ``staging.StagingCore`` for the protocol."""

    cdef Table master
    cdef object fallbacks  # compiled.Fallbacks: the Python mapper's code for what is not done here
    cdef list table_names  # STAGED_TABLES
    cdef int indexed  # how many tables the index locates per message (the case tables, then the audit log)
    cdef int audit_number
    cdef int variables
    cdef int max_case_id  # bytes of UTF-8 a case id may have without asking the Python mapper's rule
    cdef vector[string] buffers
    cdef vector[long long] taken_bytes
    cdef vector[long long] counts  # rows staged so far, by table
    cdef vector[int] message_rows
    cdef vector[size_t] rollback
    cdef vector[int] positions
    cdef Row row
    cdef _Document document
    cdef string case_id
    cdef bint has_case_id
    cdef Instant most_recent
    cdef bint has_most_recent
    cdef Instant created
    cdef bint has_created
    cdef bint nullification
    cdef string scratch
    cdef long long version_count_at
    cdef string raw  # a field's value, and its companions: kept across fields so their memory is reused
    cdef string piece
    cdef string null_flavor
    cdef string code_system
    cdef string file_name
    cdef string file_sha256
    cdef int ordinal
    cdef public object index  # staging.layout.StagedMessages of the current part
    cdef object message_key
    cdef object tostring
    cdef object message_error
    cdef object no_case_id
    cdef object no_most_recent
    cdef string nullification_code  # C.1.11.1's code of a nullification
    cdef list json_keys  # '"table":' of each table, for the audit row's row counts
    cdef vector[int] audit_layout  # the message fact of each staged audit column, in row order
    cdef vector[int] master_tail  # the message fact of each staged column after the master's fields

    def __init__(self, Table master, fallbacks, table_names, int indexed, int variables, int max_case_id, message_key, tostring,
                 message_error, no_case_id, no_most_recent, str nullification_code, audit_layout, master_tail):
        self.master, self.fallbacks = master, fallbacks
        self.table_names = list(table_names)
        self.indexed, self.audit_number, self.variables = indexed, indexed - 1, variables
        self.max_case_id = max_case_id
        self.buffers.resize(len(self.table_names))
        self.taken_bytes.resize(len(self.table_names), 0)
        self.counts.resize(len(self.table_names), 0)
        self.message_rows.resize(len(self.table_names), 0)
        self.row = Row()
        self.message_key, self.tostring, self.message_error = message_key, tostring, message_error
        self.no_case_id, self.no_most_recent = no_case_id, no_most_recent  # mapper.Required: the Python mapper's rules
        self.nullification_code = nullification_code.encode("utf-8")
        self.json_keys = [f'"{name}":'.encode() for name in self.table_names]
        self.audit_layout = audit_layout
        self.master_tail = master_tail
        # The master row is written first: row counts and payload are known only after the message's rows, and the
        # version count's offset the index keeps is one in the master table
        if FACT_ROW_COUNTS in master_tail or FACT_PAYLOAD in master_tail or FACT_VERSION_COUNT in audit_layout:
            raise ValueError("the master row cannot hold the row counts or payload, nor the audit row the version count")

    # -- the protocol's bookkeeping ----------------------------------------------------------------
    def reset_part(self, index):
        """A new batch: offsets from zero and ``index`` (an empty StagedMessages) to fill."""
        cdef size_t i
        for i in range(self.taken_bytes.size()):
            self.taken_bytes[i] = 0
        self.index = index

    def set_file(self, str name, str sha256, int ordinal):
        self.file_name = name.encode("utf-8", "surrogateescape")
        self.file_sha256 = sha256.encode("utf-8")
        self.ordinal = ordinal

    def buffered(self):
        cdef size_t total = 0, i
        for i in range(self.buffers.size()):
            total += self.buffers[i].size()
        return total

    def take(self):
        """The rows buffered since the last call, by table name; the buffers are emptied."""
        cdef dict taken = {}
        cdef size_t i
        for i in range(self.buffers.size()):
            if self.buffers[i].size():
                taken[self.table_names[i]] = PyBytes_FromStringAndSize(self.buffers[i].data(), self.buffers[i].size())
                self.taken_bytes[i] += self.buffers[i].size()
                self.buffers[i].clear()
        return taken

    def append_encoded(self, int table, bytes line):
        """A row already encoded by copybinary.encode_row (bookkeeping rows the Python side writes)."""
        self.buffers[table].append(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line))
        self.counts[table] += 1

    def staged_counts(self):
        """Rows staged so far, by table name."""
        return {self.table_names[i]: self.counts[i] for i in range(self.counts.size())}

    # -- one message -------------------------------------------------------------------------------
    def stage(self, _Element message, int position):
        """Append the message's rows, its audit row and its index entry; on an error, nothing."""
        cdef size_t i
        self.rollback.resize(self.buffers.size())
        for i in range(self.buffers.size()):
            self.rollback[i] = self.buffers[i].size()
            self.message_rows[i] = 0
        self.document = message._doc
        self.has_case_id = False
        self.has_most_recent = False
        self.has_created = False
        self.nullification = False
        self.positions.clear()
        begin_ranking(message._c_node)
        try:
            self.map_table(self.master, message._c_node, Scope(self.variables), NULL, position)
            self.check_message()
            self.write_audit(message, position)
        except BaseException:
            for i in range(self.buffers.size()):
                self.buffers[i].resize(self.rollback[i])
            raise
        finally:
            self.document = None
            begin_ranking(NULL)
        for i in range(self.buffers.size()):
            self.counts[i] += self.message_rows[i]
        format_iso(self.most_recent, self.scratch)
        most_recent = self.scratch.decode("ascii")
        created = None
        if self.has_created:
            format_iso(self.created, self.scratch)
            created = self.scratch.decode("ascii")
        self.index.keys.append(
            self.message_key(self.ordinal, position, self.case_id.decode("utf-8"), most_recent, created, self.nullification)
        )
        bounds = self.index.bounds
        for i in range(self.indexed):
            bounds.append(self.taken_bytes[i] + self.buffers[i].size())
        self.index.version_count_at.append(self.version_count_at)

    cdef int check_message(self) except -1:
        cdef str case_id
        if not self.has_case_id:
            raise self.message_error(self.no_case_id.reason, element=self.no_case_id.element)
        case_id = self.case_id.decode("utf-8")
        if self.case_id.size() > <size_t>self.max_case_id:  # shorter ones pass the rule whatever their characters
            self.fallbacks.check_case_id(case_id)  # the Python mapper's rule
        if not self.has_most_recent:
            raise self.message_error(self.no_most_recent.reason, element=self.no_most_recent.element, case_id=case_id)
        return 0

    cdef int write_audit(self, _Element message, int position) except -1:
        cdef size_t i
        self.row.begin(&self.buffers[self.audit_number])
        for i in range(self.audit_layout.size()):
            self.write_fact(self.audit_layout[i], self.audit_number, message, position)
        self.row.end()
        self.message_rows[self.audit_number] += 1
        return 0

    cdef int write_fact(self, int fact, int table, _Element message, int position) except -1:
        """One staged bookkeeping column of the message's row in ``table``; ``message`` only for the payload."""
        if fact == FACT_CASE_ID:
            self.row.text(self.case_id)
        elif fact == FACT_FILE_SHA256:
            self.row.text(self.file_sha256)
        elif fact == FACT_FILE_NAME:
            self.row.text(self.file_name)
        elif fact == FACT_POSITION:
            self.row.integer(position)
        elif fact == FACT_MOST_RECENT:
            self.row.timestamp(self.most_recent.micros)
        elif fact == FACT_CREATION:
            if self.has_created:
                self.row.timestamp(self.created.micros)
            else:
                self.row.null()
        elif fact == FACT_NULLIFICATION:
            self.row.boolean(self.nullification)
        elif fact == FACT_VERSION_COUNT:
            self.version_count_at = self.taken_bytes[table] + self.row.out.size()
            self.row.null()  # the loader writes the count here, counting the audit log
        elif fact == FACT_ROW_COUNTS:
            self.write_row_counts()
        elif fact == FACT_PAYLOAD:
            self.write_payload(message)
        else:
            raise ValueError(f"no message fact {fact}")
        return 0

    cdef void write_row_counts(self) noexcept:
        """Rows per case table of the message, as jsonb: its version byte, then the JSON text."""
        cdef bint first = True
        cdef int i
        self.scratch.assign(b"\x01{", 2)
        for i in range(self.audit_number):
            if self.message_rows[i]:
                if not first:
                    self.scratch.push_back(b',')
                first = False
                self.scratch.append(<bytes>self.json_keys[i])
                append_integer(self.scratch, self.message_rows[i])
        self.scratch.push_back(b'}')
        self.row.raw(self.scratch.data(), self.scratch.size())

    cdef int write_payload(self, _Element message) except -1:
        """The message's XML, straight into the buffer after its length (patched once known)."""
        cdef string* out = self.row.out
        cdef size_t length_at = out.size()
        cdef bytes payload
        put_be32(out[0], 0)
        if serialize(message._c_node, out[0]):
            patch_be32(out[0], length_at, out.size() - length_at - 4)
        else:
            payload = self.tostring(message)
            out.append(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
            patch_be32(out[0], length_at, PyBytes_GET_SIZE(payload))
        self.row.fields += 1
        return 0

    # -- tables ------------------------------------------------------------------------------------
    cdef int map_table(self, Table table, xmlNode* parent, Scope scope, Selection* parent_selection, int message_position) except -1:
        cdef vector[xmlNode*] nodes
        cdef list values = None
        cdef Py_ssize_t i, count, b
        cdef size_t k
        cdef xmlNode* node
        cdef Scope row_scope
        cdef Bind bind
        cdef vector[xmlNode*] bound
        cdef string text
        if table.rows == ROWS_ROOT:
            nodes.push_back(parent)
        elif table.rows == ROWS_SLOT:
            nodes = parent_selection[0][table.row_slot]
        elif table.rows == ROWS_EXPRESSION:
            table.row_path.select(parent, scope, nodes)
        else:
            values = self.distinct_values(table, parent, scope)
        count = len(values) if values is not None else <Py_ssize_t>nodes.size()
        if not table.repeated and count > 1:
            count = 1
        for i in range(count):
            node = parent if values is not None else nodes[i]
            row_scope = scope
            if values is not None or table.binds:
                row_scope = scope.copy()
            if values is not None:
                row_scope.strings[table.row_variable] = <bytes>values[i]
                row_scope.has_string[table.row_variable] = True
            for b in range(len(table.binds)):
                bind = <Bind>table.binds[b]
                if bind.string_of:
                    bind.path.select(node, row_scope, bound)
                    text.clear()
                    for k in range(bound.size()):  # XPath's string(): the first node in document order
                        if bind.path.attribute is None:
                            string_value(bound[k], text)
                            break
                        if get_attribute(bound[k], bind.path.attribute, text):
                            break
                    row_scope.strings[bind.variable] = text
                    row_scope.has_string[bind.variable] = True
                else:
                    bind.path.select(node, row_scope, row_scope.bind_set(bind.variable)[0])
            table.trie.select(node, row_scope, table.selection)
            self.write_row(table, node, row_scope, i + 1, message_position)
            if table.repeated:
                self.positions.push_back(i + 1)
            for b in range(len(table.children)):
                self.map_table(<Table>table.children[b], node, row_scope, &table.selection, message_position)
            if table.repeated:
                self.positions.pop_back()
        return 0

    cdef list distinct_values(self, Table table, xmlNode* parent, Scope scope):
        """Distinct attribute values of a union of paths, in document order (rows enumerated by value)."""
        cdef vector[xmlNode*] nodes, owners
        cdef vector[string] texts
        cdef vector[size_t] order
        cdef vector[pair[size_t, size_t]] ranked
        cdef string value
        cdef Path path
        cdef Py_ssize_t p
        cdef size_t i, j
        for p in range(len(table.value_paths)):
            path = <Path>table.value_paths[p]
            path.select(parent, scope, nodes)
            for i in range(nodes.size()):
                if get_attribute(nodes[i], path.attribute, value):
                    owners.push_back(nodes[i])
                    texts.push_back(value)
        if owners.size() > SMALL_SET and document_ranks(owners, ranked):
            std_sort(ranked.begin(), ranked.end())  # (rank, index): stable, the union's own order for one element
            for i in range(ranked.size()):
                order.push_back(ranked[i].second)
        else:
            for i in range(owners.size()):
                j = order.size()
                while j > 0 and before(owners[i], owners[order[j - 1]]):
                    j -= 1
                order.insert(order.begin() + j, i)
        cdef dict seen = {}
        cdef bytes key
        for i in range(order.size()):
            key = texts[order[i]]
            seen.setdefault(key, None)
        return list(seen)

    cdef int write_row(self, Table table, xmlNode* node, Scope scope, int position, int message_position) except -1:
        cdef Row row = self.row
        cdef Py_ssize_t f
        cdef size_t i
        row.begin(&self.buffers[table.number])
        if not table.is_master:
            row.text(self.case_id)
            for i in range(self.positions.size()):
                row.integer(self.positions[i])
            if table.repeated:
                row.integer(position)
        for f in range(len(table.fields)):
            self.write_field(<Field>table.fields[f], node, scope, table.selection)
        if table.is_master:
            for i in range(self.master_tail.size()):
                self.write_fact(self.master_tail[i], table.number, None, message_position)
        row.end()
        self.message_rows[table.number] += 1
        return 0

    cdef object proxy(self, xmlNode* node):
        return elementFactory(self.document, node)

    cdef dict python_variables(self, Scope scope):
        names = self.fallbacks.variable_names
        cdef dict variables = {}
        cdef size_t i, j
        for i in range(scope.strings.size()):
            if scope.has_string[i]:
                variables[names[i]] = scope.strings[i].decode("utf-8")
            elif scope.has_set[i]:
                variables[names[i]] = [self.proxy(deref(scope.sets[i])[j]) for j in range(deref(scope.sets[i]).size())]
        return variables

    cdef int write_encoded(self, list fields) except -1:
        for field in fields:
            self.row.encoded(<bytes>field)
        return 0

    cdef int write_field(self, Field field, xmlNode* node, Scope scope, Selection& selection) except -1:
        cdef Row row = self.row
        cdef vector[xmlNode*] found
        cdef vector[xmlNode*]* nodes
        cdef xmlNode* first = NULL
        cdef string* raw = &self.raw
        cdef string* piece = &self.piece
        cdef string* null_flavor = &self.null_flavor
        cdef string* code_system = &self.code_system
        cdef bint has_raw = False, has_null_flavor = False, has_code_system = False
        cdef size_t i, n
        raw.clear()
        if field.mode == FIELD_PYTHON:
            return self.write_encoded(self.fallbacks.read(field.number, self.proxy(node), self.python_variables(scope), None))
        if field.mode == FIELD_VARIABLE:
            if scope.has_string[field.variable]:
                row.text(scope.strings[field.variable])
            else:
                row.null()
            return 0
        if field.mode == FIELD_SLOT:
            nodes = &selection[field.slot]
        else:
            field.path.select(node, scope, found)
            nodes = &found
        if nodes.size():
            first = nodes[0][0]
        if field.kind == KIND_ATTACHMENT:
            selected = [self.proxy(nodes[0][i]) for i in range(nodes.size())]
            return self.write_encoded(self.fallbacks.read(field.number, self.proxy(node), {}, selected))
        if first != NULL:
            if field.null_flavor:
                has_null_flavor = get_attribute(first, NULL_FLAVOR, null_flavor[0])
            if field.code_system:
                has_code_system = get_attribute(first, CODE_SYSTEM, code_system[0])
        if field.join_all and field.attribute is None:
            for i in range(nodes.size()):
                string_value(nodes[0][i], piece[0])
                strip(piece[0])
                if piece[0].size():
                    if raw[0].size():
                        raw[0].push_back(b'\n')
                    raw[0].append(piece[0])
            has_raw = raw[0].size() > 0
        elif first != NULL:
            if field.attribute is not None:
                has_raw = get_attribute(first, field.attribute, raw[0]) and raw[0].size() > 0
            else:
                string_value(first, raw[0])
                strip(raw[0])
                has_raw = raw[0].size() > 0
        if has_raw and field.strip_prefix is not None:
            n = PyBytes_GET_SIZE(field.strip_prefix)
            if raw[0].size() >= n and memcmp(raw[0].data(), PyBytes_AS_STRING(field.strip_prefix), n) == 0:
                raw[0].erase(0, n)
        self.write_value(field, raw[0], has_raw)
        if field.code_system:
            if has_code_system:
                row.text(code_system[0])
            else:
                row.null()
        if field.null_flavor:
            if has_null_flavor:
                row.text(null_flavor[0])
            else:
                row.null()
        return 0

    cdef int write_value(self, Field field, string& raw, bint has_raw) except -1:
        """The field's main column (and a date's UTC instant and precision), converted as values.py does."""
        cdef Row row = self.row
        cdef Instant instant
        cdef int parts = 0
        cdef const char* precision
        cdef long long integer
        cdef double number
        if field.role == ROLE_CASE_ID:
            self.has_case_id = has_raw and raw.size() > 0
            self.case_id.clear()
            if self.has_case_id:
                self.case_id = raw
        if not has_raw:
            row.null()
            if field.kind == KIND_DATE:
                row.null()
                row.null()
            return 0
        if field.max_bytes and raw.size() > <size_t>field.max_bytes:  # too long to index: the Python mapper's MappingError
            return self.write_encoded(self.fallbacks.convert(field.number, raw.decode("utf-8"))[0])
        if field.kind == KIND_TEXT:
            row.text(raw)
            return 0
        if field.kind == KIND_CODE:
            collapse_token(raw)
            row.text(raw)
            if field.role == ROLE_NULLIFICATION:
                self.nullification = raw == self.nullification_code
            return 0
        self.scratch = raw
        strip(self.scratch)
        if field.kind == KIND_DATE:
            if parse_timestamp(self.scratch, &instant, &parts):
                row.text(raw)
                row.timestamp(instant.micros)
                precision = precision_name(parts)
                row.raw(precision, strlen(precision))
            else:  # Python's verdict: the same columns, or the MappingError
                fields, micros = self.fallbacks.convert(field.number, raw.decode("utf-8"))
                self.write_encoded(fields)
                if micros is None:
                    return 0
                instant = instant_from_micros(micros)
            if field.role == ROLE_MOST_RECENT:
                self.most_recent, self.has_most_recent = instant, True
            elif field.role == ROLE_CREATION:
                self.created, self.has_created = instant, True
            return 0
        if field.kind == KIND_BOOL:
            ascii_lower(self.scratch)
            if self.scratch == b"true" or self.scratch == b"1":
                row.boolean(True)
                return 0
            if self.scratch == b"false" or self.scratch == b"0":
                row.boolean(False)
                return 0
        elif field.kind == KIND_NUMBER and simple_decimal(self.scratch, False):
            number = PyOS_string_to_double(self.scratch.c_str(), NULL, NULL)
            if isfinite(number):  # 1e400 is infinite: Python refuses it, naming the element
                row.float8(number)
                return 0
        elif field.kind == KIND_INTEGER and simple_decimal(self.scratch, True):
            integer = strtoll(self.scratch.c_str(), NULL, 10)
            if -2147483648 <= integer <= 2147483647:
                row.integer(integer)
                return 0
        fields, _ = self.fallbacks.convert(field.number, raw.decode("utf-8"))
        return self.write_encoded(fields)


cdef Name NULL_FLAVOR = Name("nullFlavor")
cdef Name CODE_SYSTEM = Name("codeSystem")
