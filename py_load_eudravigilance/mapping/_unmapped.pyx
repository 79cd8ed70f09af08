# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# distutils: language = c++
"""The count of ``unmapped.py``, walked in C over lxml's tree: the same automaton, the same result.

The Python counter costs several microseconds an element, more than mapping the message; here an
element costs a look-up of its name's id by libxml2's interned pointers (:class:`Names`) and an index
into its parent's state, and a code predicate is tested on libxml2's structs. The states, their steps
and what they read come from the Python automaton (asked once per new step and cached); an unmapped
value, rare, is noted with the path ``unmapped.py`` would name. ``tests/test_unmapped.py`` checks
that both count the same.
"""

from libcpp.string cimport string
from libcpp.unordered_map cimport unordered_map
from libcpp.unordered_set cimport unordered_set
from libcpp.vector cimport vector
from libcpp cimport bool as cbool
from libc.string cimport strcmp, strspn
from cython.operator cimport dereference as deref

from lxml.includes.etreepublic cimport _Element, import_lxml__etree
from lxml.includes.tree cimport XML_CDATA_SECTION_NODE, XML_ELEMENT_NODE, XML_TEXT_NODE, xmlAttr, xmlChar, xmlNode, xmlNs

import_lxml__etree()


cdef const char* HL7 = b"urn:hl7-org:v3"
cdef inline void clark(const char* href, const char* name, string& out) noexcept:
    """An attribute's Clark name."""
    out.clear()
    if href != NULL:
        out.append(b"{")
        out.append(href)
        out.append(b"}")
    out.append(name)


cdef inline void named_element_key(const char* href, const char* name, string& out) noexcept:
    """An element's key: its local name for HL7's own elements (most of a message: shorter to build and hash),
    ``{}name`` in no namespace, else its Clark name."""
    out.clear()
    if href == NULL:
        out.append(b"{}")
    elif strcmp(href, HL7) != 0:
        out.append(b"{")
        out.append(href)
        out.append(b"}")
    out.append(name)


def key_of_tag(str tag):
    """The key :func:`named_element_key` gives an element of Clark tag ``tag``."""
    if tag.startswith("{urn:hl7-org:v3}"):
        return tag[16:].encode("utf-8")
    return (tag if tag.startswith("{") else "{}" + tag).encode("utf-8")


cdef inline const char* node_href(xmlNode* node) noexcept:
    return <const char*>node.ns.href if node.ns != NULL else NULL


cdef inline const char* attribute_href(xmlAttr* attribute) noexcept:
    return <const char*>attribute.ns.href if attribute.ns != NULL else NULL


cdef inline bint blank(const char* text) noexcept:
    return text == NULL or text[strspn(text, " \t\r\n")] == 0  # XML's white space (strspn: vectorized in glibc)


cdef const char* XSI = b"http://www.w3.org/2001/XMLSchema-instance"


cdef void put_name(string& out, const char* href, const char* prefix, const char* name) noexcept:
    """A name as ``unmapped._name`` writes it in a path: HL7's bare, ``xsi:``, else ``prefix:`` or ``{namespace}``."""
    if href != NULL and strcmp(href, HL7) != 0:
        if strcmp(href, XSI) == 0:
            out.append(b"xsi:")
        elif prefix != NULL:
            out.append(prefix)
            out.append(b":")
        else:
            out.append(b"{")
            out.append(href)
            out.append(b"}")
    out.append(name)


cdef void path_of(xmlNode* node, xmlAttr* attribute, xmlNode* message, string& out) noexcept:
    """The path ``unmapped._Found.note`` names: element names from the message down, then ``@attribute``."""
    cdef vector[xmlNode*] chain
    while node != NULL and node != message:
        chain.push_back(node)
        node = node.parent
    out.clear()
    cdef size_t i = chain.size()
    while i > 0:
        i -= 1
        node = chain[i]
        put_name(out, node_href(node), <const char*>node.ns.prefix if node.ns != NULL else NULL, <const char*>node.name)
        if i > 0:
            out.append(b"/")
    if attribute != NULL:
        if not out.empty():
            out.append(b"/")
        out.append(b"@")
        put_name(out, attribute_href(attribute), NULL, <const char*>attribute.name)
    if out.empty():
        out.append(b".")


cdef str child_tag(xmlNode* node):
    """The element's Clark tag, as lxml gives it."""
    cdef const char* href = node_href(node)
    local = (<bytes>node.name).decode("utf-8")
    return f"{{{(<bytes>href).decode('utf-8')}}}{local}" if href != NULL else local


cdef bint has_value(xmlAttr* attribute) noexcept:
    cdef xmlNode* part = attribute.children
    while part != NULL:
        if part.content != NULL and part.content[0] != 0:
            return True
        part = part.next
    return False


cdef bint text_in(xmlNode* node) noexcept:
    """A non-blank text node directly in ``node``."""
    cdef xmlNode* child = node.children
    while child != NULL:
        if (child.type == XML_TEXT_NODE or child.type == XML_CDATA_SECTION_NODE) and not blank(<const char*>child.content):
            return True
        child = child.next
    return False


cdef struct Slot:
    const char* name
    const char* href
    long long checked  # the message in which the slot's names were last compared
    int id


cdef enum:
    SLOT_BITS = 10
    UNDECIDED = -1  # State.step_of: not asked yet
    ELSEWHERE = -2  # State.step_of: no step goes on with this name


cdef class Names:
    """Ids of the names the automaton knows (0: any other name), looked up by libxml2's pointers.

    The parser interns names, so within a document one name is one pointer: a slot keeps the id of a
    (name, namespace URI) pointer pair, and is compared with its names again once per message, as a
    pointer freed with an earlier message may come back naming something else. The ids are few (the
    dictionary's names): a hostile file's endless distinct names all get 0 and only evict slots.
    """

    cdef bint elements  # keys as named_element_key writes them (elements), else Clark names (attributes)
    cdef unordered_map[string, int] ids
    cdef vector[Slot] slots
    cdef vector[string] slot_names
    cdef vector[string] slot_hrefs
    cdef long long message
    cdef string key

    def __cinit__(self, bint elements):
        self.elements = elements
        self.slots.resize(1 << SLOT_BITS)
        self.slot_names.resize(1 << SLOT_BITS)
        self.slot_hrefs.resize(1 << SLOT_BITS)
        self.forget_slots()

    cdef void forget_slots(self) noexcept:
        cdef size_t i
        for i in range(self.slots.size()):
            self.slots[i].name = NULL
            self.slots[i].href = NULL
            self.slots[i].id = 0
            self.slots[i].checked = 0

    cdef int intern(self, const string& key) noexcept:
        """The id of ``key``, given one if new (while compiling: from the automaton's names only)."""
        cdef unordered_map[string, int].iterator found = self.ids.find(key)
        if found != self.ids.end():
            return deref(found).second
        cdef int id = self.ids.size() + 1
        self.ids[key] = id
        self.forget_slots()  # a slot may say 0 for the name
        return id

    cdef inline int id_of(self, const xmlChar* name, const char* href) noexcept:
        cdef size_t at = ((<size_t>name ^ (<size_t>href << 1)) * <size_t>0x9E3779B97F4A7C15ULL) >> (64 - SLOT_BITS)
        cdef Slot* slot = &self.slots[at]
        if slot.name == <const char*>name and slot.href == href:
            if slot.checked == self.message:
                return slot.id
            if strcmp(self.slot_names[at].c_str(), <const char*>name) == 0 and (
                href == NULL or strcmp(self.slot_hrefs[at].c_str(), href) == 0
            ):
                slot.checked = self.message
                return slot.id
        if self.elements:
            named_element_key(href, <const char*>name, self.key)
        else:
            clark(href, <const char*>name, self.key)
        cdef unordered_map[string, int].iterator found = self.ids.find(self.key)
        slot.name, slot.href, slot.checked = <const char*>name, href, self.message
        slot.id = deref(found).second if found != self.ids.end() else 0
        self.slot_names[at].assign(<const char*>name)
        if href != NULL:
            self.slot_hrefs[at].assign(href)
        return slot.id


cdef bint attribute_equals(xmlNode* node, Names attributes, int name, const string& expected) noexcept:
    """Whether ``node`` has the attribute of id ``name`` with the value ``expected``."""
    cdef xmlAttr* attribute = node.properties
    cdef string value
    cdef xmlNode* part
    while attribute != NULL:
        if attributes.id_of(attribute.name, attribute_href(attribute)) == name:
            part = attribute.children
            if part != NULL and part.next == NULL and part.content != NULL:  # one text node: the usual case
                return strcmp(<const char*>part.content, expected.c_str()) == 0
            value.clear()
            while part != NULL:
                if part.content != NULL:
                    value.append(<const char*>part.content)
                part = part.next
            return value == expected
        attribute = attribute.next
    return False


cdef class Key:
    """An ``AttributeKey``: the node itself (``child`` 0), or one of its children so named, has these attribute values."""

    cdef int child  # element id
    cdef vector[int] names  # attribute ids
    cdef vector[string] values

    def __init__(self, object key, Names elements, Names attributes):
        child, names = key.signature
        self.child = elements.intern(key_of_tag(child)) if child is not None else 0
        for name, value in zip(names, key.values):
            self.names.push_back(attributes.intern(name.encode("utf-8")))
            self.values.push_back(value.encode("utf-8"))

    cdef bint all_on(self, xmlNode* node, Names attributes) noexcept:
        cdef size_t i
        for i in range(self.names.size()):
            if not attribute_equals(node, attributes, self.names[i], self.values[i]):
                return False
        return True

    cdef bint passes(self, xmlNode* node, Names elements, Names attributes) noexcept:
        cdef xmlNode* child
        if self.child == 0:
            return self.all_on(node, attributes)
        child = node.children
        while child != NULL:
            if child.type == XML_ELEMENT_NODE and elements.id_of(child.name, node_href(child)) == self.child and self.all_on(
                child, attributes
            ):
                return True
            child = child.next
        return False


cdef class Step:
    """A state's step on one child name: its keys, and the next state for each set of keys passed."""

    cdef object tag
    cdef list keys  # of Key
    cdef object python_keys  # the AttributeKey objects, in the same order
    cdef unordered_map[unsigned long long, int] by_mask


cdef class State:
    cdef object python  # the unmapped._State
    cdef bint own_text
    cdef bint empty
    cdef vector[cbool] reads  # by attribute id: the attribute is read (ids past its end: not read)
    cdef unordered_set[int] known  # the ids of the child names a step goes on with
    cdef vector[int] step_of  # by element id: UNDECIDED, ELSEWHERE, or the index in Counter.step_list
    cdef int elsewhere  # the state of any other child (-1: not asked yet)


cdef void mark(vector[cbool]& flags, int id) noexcept:
    if <size_t>id >= flags.size():
        flags.resize(id + 1, False)
    flags[id] = True


cdef inline bint marked(const vector[cbool]& flags, int id) noexcept:
    return <size_t>id < flags.size() and flags[id]


cdef class Counter:
    """Counts a message's unmapped values as ``unmapped.UnmappedCounter`` does; compile once, use for many messages."""

    cdef object reference  # the UnmappedCounter: the automaton, and how a value's path is named
    cdef list states  # of State
    cdef dict index  # _State -> its index in states
    cdef list step_list  # of Step
    cdef Names elements
    cdef Names attributes
    cdef vector[cbool] structural  # by attribute id
    cdef xmlNode* message
    cdef unordered_map[string, long long] found  # the message's unmapped values by path
    cdef vector[string] order  # the paths in the order found

    def __init__(self, object reference, object structural):
        self.reference = reference
        self.states = []
        self.index = {}
        self.step_list = []
        self.elements = Names(True)
        self.attributes = Names(False)
        for name in structural:
            mark(self.structural, self.attributes.intern(name.encode("utf-8")))
        self.state_of(reference.start)

    cdef int state_of(self, object python) except -1:
        found = self.index.get(python)
        if found is not None:
            return found
        cdef State state = State()
        state.python = python
        state.own_text = python.own_text
        state.empty = python.empty
        for name in python.attributes:
            mark(state.reads, self.attributes.intern(name.encode("utf-8")))
        for tag in python.known:
            state.known.insert(self.elements.intern(key_of_tag(tag)))
        state.elsewhere = -1
        self.index[python] = len(self.states)
        self.states.append(state)
        return len(self.states) - 1

    def count(self, _Element message):
        """How many values of ``message`` no column holds, and their distinct paths in document order."""
        self.message = message._c_node
        self.found.clear()
        self.order.clear()
        self.elements.message += 1
        self.attributes.message += 1
        self.walk(self.message, 0)
        cdef long long total = 0
        for path in self.order:
            total += self.found[path]
        return total, [path.decode("utf-8") for path in self.order]

    cdef void note(self, xmlNode* node, xmlAttr* attribute) noexcept:
        cdef string path
        path_of(node, attribute, self.message, path)
        if self.found.count(path) == 0:
            self.found[path] = 1
            self.order.push_back(path)
        else:
            self.found[path] = self.found[path] + 1

    cdef int walk(self, xmlNode* node, int index) except -1:
        cdef State state = <State>self.states[index]
        if state.empty:
            self.everything(node)
            return 0
        cdef xmlAttr* attribute = node.properties
        while attribute != NULL:  # the name first: an attribute's value is a node of its own, elsewhere in memory
            if not marked(state.reads, self.attributes.id_of(attribute.name, attribute_href(attribute))) and has_value(attribute):
                self.note(node, attribute)
            attribute = attribute.next
        if not state.own_text and text_in(node):
            self.note(node, NULL)
        cdef xmlNode* child = node.children
        while child != NULL:
            if child.type == XML_ELEMENT_NODE:
                self.walk(child, self.step(state, child))
            child = child.next
        return 0

    cdef int step(self, State state, xmlNode* child) except -1:
        cdef int id = self.elements.id_of(child.name, node_href(child))
        if <size_t>id >= state.step_of.size():
            state.step_of.resize(id + 1, UNDECIDED)
        cdef int number = state.step_of[id]
        if number == UNDECIDED:
            number = self.new_step(state, child, id)
            state.step_of[id] = number
        if number == ELSEWHERE:
            if state.elsewhere < 0:
                state.elsewhere = self.state_of(state.python.elsewhere(self.reference.states))
            return state.elsewhere
        cdef Step step = <Step>self.step_list[number]
        cdef unsigned long long mask = 0
        cdef size_t i
        for i in range(len(step.keys)):
            if (<Key>step.keys[i]).passes(child, self.elements, self.attributes):
                mask |= 1ULL << i
        cdef unordered_map[unsigned long long, int].iterator cached = step.by_mask.find(mask)
        if cached != step.by_mask.end():
            return deref(cached).second
        return self.new_state(state, step, mask)

    cdef int new_state(self, State state, Step step, unsigned long long mask) except -1:
        """The state after ``step`` with the keys of ``mask`` passed, asked of the automaton once (a method of its
        own: the generator below would cost ``step`` a closure on every call)."""
        passed = frozenset(k for i, k in enumerate(step.python_keys) if mask >> i & 1)
        next_index = self.state_of(state.python.next(step.tag, passed, self.reference.states))
        step.by_mask[mask] = next_index
        return next_index

    cdef int new_step(self, State state, xmlNode* child, int id) except? -3:
        """The step ``state`` takes on a child of name ``id``: ELSEWHERE, or its index in step_list."""
        if id == 0 or state.known.count(id) == 0:
            return ELSEWHERE
        cdef Step step = Step()
        step.tag = child_tag(child)
        step.python_keys = state.python.keys_for(step.tag)
        step.keys = [Key(k, self.elements, self.attributes) for k in step.python_keys]
        self.step_list.append(step)
        return len(self.step_list) - 1

    cdef int everything(self, xmlNode* node) except -1:
        """Every value under ``node`` (which nothing maps), counted."""
        cdef xmlAttr* attribute = node.properties
        while attribute != NULL:
            if not marked(self.structural, self.attributes.id_of(attribute.name, attribute_href(attribute))) and has_value(attribute):
                self.note(node, attribute)
            attribute = attribute.next
        if text_in(node):
            self.note(node, NULL)
        cdef xmlNode* child = node.children
        while child != NULL:
            if child.type == XML_ELEMENT_NODE:
                self.everything(child)
            child = child.next
        return 0
