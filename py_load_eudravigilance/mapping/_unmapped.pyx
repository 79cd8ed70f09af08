# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# distutils: language = c++
"""The count of ``unmapped.py``, walked in C over lxml's tree: the same automaton, the same result.

The Python counter costs several microseconds an element, more than mapping the message; here an
element costs a hash lookup of its name in its parent's state, and a code predicate is tested on
libxml2's structs. The states, their steps and what they read come from the Python automaton (asked
once per new step and cached); an unmapped value, rare, is noted by the Python code that names its
path. ``tests/test_unmapped.py`` checks that both count the same.
"""

from libcpp.string cimport string
from libcpp.unordered_map cimport unordered_map
from libcpp.unordered_set cimport unordered_set
from libcpp.vector cimport vector
from libc.string cimport strcmp
from cython.operator cimport dereference as deref

from lxml.includes.etreepublic cimport _Element, import_lxml__etree
from lxml.includes.tree cimport XML_CDATA_SECTION_NODE, XML_ELEMENT_NODE, XML_TEXT_NODE, xmlAttr, xmlNode, xmlNs

import_lxml__etree()


cdef const char* HL7 = b"urn:hl7-org:v3"
# Keys are built in these (the walk holds the GIL, so one at a time): a buffer keeps its capacity, and most
# HL7 element names are longer than a string holds without allocating
cdef string TAG_KEY, CHILD_KEY, ATTRIBUTE_KEY


cdef inline void clark(const char* href, const char* name, string& out) noexcept:
    """An attribute's Clark name; an element's too, but for HL7's own elements, named by their local name alone
    (most of a message: the key is shorter to build and hash), and ``{}name`` for an element in no namespace."""
    out.clear()
    if href != NULL:
        out.append(b"{")
        out.append(href)
        out.append(b"}")
    out.append(name)


cdef inline void element_key(xmlNode* node, string& out) noexcept:
    cdef const char* href = node_href(node)
    out.clear()
    if href == NULL:
        out.append(b"{}")
    elif strcmp(href, HL7) != 0:
        out.append(b"{")
        out.append(href)
        out.append(b"}")
    out.append(<const char*>node.name)


def key_of_tag(str tag):
    """The key :func:`element_key` gives an element of Clark tag ``tag``."""
    if tag.startswith("{urn:hl7-org:v3}"):
        return tag[16:].encode("utf-8")
    return (tag if tag.startswith("{") else "{}" + tag).encode("utf-8")


cdef inline const char* node_href(xmlNode* node) noexcept:
    return <const char*>node.ns.href if node.ns != NULL else NULL


cdef inline const char* attribute_href(xmlAttr* attribute) noexcept:
    return <const char*>attribute.ns.href if attribute.ns != NULL else NULL


cdef inline bint blank(const char* text) noexcept:
    if text == NULL:
        return True
    while text[0] != 0:
        if text[0] != b" " and text[0] != b"\t" and text[0] != b"\r" and text[0] != b"\n":
            return False
        text += 1
    return True


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


cdef bint attribute_equals(xmlNode* node, const string& name, const string& expected) noexcept:
    """Whether ``node`` has the attribute of Clark name ``name`` with the value ``expected``."""
    cdef xmlAttr* attribute = node.properties
    cdef string key, value
    cdef xmlNode* part
    while attribute != NULL:
        if attribute.ns == NULL:
            if strcmp(<const char*>attribute.name, name.c_str()) != 0:
                attribute = attribute.next
                continue
            key = name
        else:
            clark(attribute_href(attribute), <const char*>attribute.name, key)
        if key == name:
            part = attribute.children
            if part != NULL and part.next == NULL and part.content != NULL:  # one text node: the usual case
                return strcmp(<const char*>part.content, expected.c_str()) == 0
            value.clear()
            part = attribute.children
            while part != NULL:
                if part.content != NULL:
                    value.append(<const char*>part.content)
                part = part.next
            return value == expected
        attribute = attribute.next
    return False


cdef bint text_in(xmlNode* node) noexcept:
    """A non-blank text node directly in ``node``."""
    cdef xmlNode* child = node.children
    while child != NULL:
        if (child.type == XML_TEXT_NODE or child.type == XML_CDATA_SECTION_NODE) and not blank(<const char*>child.content):
            return True
        child = child.next
    return False


cdef class Key:
    """An ``AttributeKey``: the node itself (``child`` empty), or one of its children so named, has these attribute values."""

    cdef string child
    cdef bint on_child
    cdef vector[string] names
    cdef vector[string] values

    def __init__(self, object key):
        child, names = key.signature
        self.on_child = child is not None
        if child is not None:
            self.child = key_of_tag(child)
        for name, value in zip(names, key.values):
            self.names.push_back(name.encode("utf-8"))
            self.values.push_back(value.encode("utf-8"))

    cdef bint all_on(self, xmlNode* node) noexcept:
        cdef size_t i
        for i in range(self.names.size()):
            if not attribute_equals(node, self.names[i], self.values[i]):
                return False
        return True

    cdef bint passes(self, xmlNode* node) noexcept:
        cdef xmlNode* child
        if not self.on_child:
            return self.all_on(node)
        child = node.children
        while child != NULL:
            if child.type == XML_ELEMENT_NODE:
                element_key(child, CHILD_KEY)
                if CHILD_KEY == self.child and self.all_on(child):
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
    cdef unordered_set[string] attributes
    cdef unordered_map[string, int] steps  # child name -> index in Counter.steps
    cdef unordered_set[string] known  # the child names a step goes on with (as element_key writes them)
    cdef int elsewhere  # the state of any other child (-1: not asked yet)


cdef class Counter:
    """Counts a message's unmapped values as ``unmapped.UnmappedCounter`` does; compile once, use for many messages."""

    cdef object reference  # the UnmappedCounter: the automaton, and how a value's path is named
    cdef list states  # of State
    cdef dict index  # _State -> its index in states
    cdef list step_list  # of Step
    cdef unordered_set[string] structural
    cdef xmlNode* message
    cdef unordered_map[string, long long] found  # the message's unmapped values by path
    cdef vector[string] order  # the paths in the order found

    def __init__(self, object reference, object structural):
        self.reference = reference
        self.states = []
        self.index = {}
        self.step_list = []
        for name in structural:
            self.structural.insert(name.encode("utf-8"))
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
            state.attributes.insert(name.encode("utf-8"))
        for tag in python.known:
            state.known.insert(key_of_tag(tag))
        state.elsewhere = -1
        self.index[python] = len(self.states)
        self.states.append(state)
        return len(self.states) - 1

    def count(self, _Element message):
        """How many values of ``message`` no column holds, and their distinct paths in document order."""
        self.message = message._c_node
        self.found.clear()
        self.order.clear()
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
            clark(attribute_href(attribute), <const char*>attribute.name, ATTRIBUTE_KEY)
            if state.attributes.count(ATTRIBUTE_KEY) == 0 and has_value(attribute):
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
        element_key(child, TAG_KEY)
        if state.known.count(TAG_KEY) == 0:
            if state.elsewhere < 0:
                state.elsewhere = self.state_of(state.python.elsewhere(self.reference.states))
            return state.elsewhere
        cdef Step step
        cdef unordered_map[string, int].iterator known = state.steps.find(TAG_KEY)
        if known == state.steps.end():
            step = Step()
            step.tag = child_tag(child)
            step.python_keys = state.python.keys_for(step.tag)
            step.keys = [Key(k) for k in step.python_keys]
            state.steps[TAG_KEY] = len(self.step_list)
            self.step_list.append(step)
        else:
            step = <Step>self.step_list[deref(known).second]
        cdef unsigned long long mask = 0
        cdef size_t i
        for i in range(len(step.keys)):
            if (<Key>step.keys[i]).passes(child):
                mask |= 1ULL << i
        cdef unordered_map[unsigned long long, int].iterator cached = step.by_mask.find(mask)
        if cached != step.by_mask.end():
            return deref(cached).second
        passed = frozenset(k for i, k in enumerate(step.python_keys) if mask >> i & 1)
        next_index = self.state_of(state.python.next(step.tag, passed, self.reference.states))
        step.by_mask[mask] = next_index
        return next_index

    cdef int everything(self, xmlNode* node) except -1:
        """Every value under ``node`` (which nothing maps), counted."""
        cdef xmlAttr* attribute = node.properties
        while attribute != NULL:
            clark(attribute_href(attribute), <const char*>attribute.name, ATTRIBUTE_KEY)
            if self.structural.count(ATTRIBUTE_KEY) == 0 and has_value(attribute):
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
