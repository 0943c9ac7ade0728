package cache

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
)

// maxDepth bounds the nesting Canonical follows, as encoding/json's
// decoder does, so that a hostile line cannot exhaust the stack.
const maxDepth = 10000

// ErrNotCacheable marks a body Canonical will not put in canonical form: it
// is not JSON, or it holds a string that is not Unicode (invalid UTF-8, a
// lone surrogate escape). Such a request is sent without the cache.
var ErrNotCacheable = errors.New("not cacheable")

// Canonical returns body, one JSON value, in canonical form:
//   - insignificant whitespace removed;
//   - object members sorted by their key's canonical encoding, byte by
//     byte (for keys without escapes, by their UTF-8 bytes); members with
//     the same key keep their order, since the API keeps the last;
//   - array elements in their order;
//   - numbers exactly as written: 1, 1.0 and 1e0 stay three numbers
//     (the API may read them alike, but an integer field may also refuse
//     1.0, and a missed hit costs one request where a wrong one serves a
//     wrong answer);
//   - strings by value: unescaped, then escaped again as encoding/json
//     writes them without HTML escaping (jsonenc.AppendString), so that
//     "\u00e9" and "é" are one string.
//
// Two bodies that are the same JSON value, member order aside, have one
// canonical form, and Canonical(Canonical(b)) is Canonical(b). A body that
// is not one JSON value, or that holds invalid UTF-8 or a lone surrogate,
// is an error wrapping ErrNotCacheable.
func Canonical(body []byte) ([]byte, error) {
	return AppendCanonical(make([]byte, 0, len(body)), body)
}

// AppendCanonical appends body's canonical form (see Canonical) to dst.
// On error dst is returned as it was.
func AppendCanonical(dst, body []byte) ([]byte, error) {
	var c canon
	return c.append(dst, body)
}

// append is AppendCanonical, reusing c's scratch space.
func (c *canon) append(dst, body []byte) ([]byte, error) {
	c.in, c.pos = body, 0
	out, err := c.value(dst, 0)
	if err == nil {
		c.space()
		if c.pos < len(c.in) {
			err = c.fail("data after the value")
		}
	}
	if err != nil {
		return dst, err
	}
	return out, nil
}

// canon is the state of one Canonical: the input and where it is read,
// and scratch space reused by every object and string within.
type canon struct {
	in      []byte
	pos     int
	members [][]member // by depth, reused
	scratch []byte     // an object's members while they are sorted
	str     []byte     // a string's value while it is unescaped
}

// member is one object member as written to the output: out[start:end],
// its key out[start+1:keyEnd] (without the quotes).
type member struct{ start, keyEnd, end int }

func (c *canon) fail(what string) error {
	return fmt.Errorf("%w: byte %d: %s", ErrNotCacheable, c.pos, what)
}

func (c *canon) space() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canon) value(out []byte, depth int) ([]byte, error) {
	c.space()
	if c.pos >= len(c.in) {
		return out, c.fail("unexpected end")
	}
	switch ch := c.in[c.pos]; {
	case ch == '{':
		return c.object(out, depth+1)
	case ch == '[':
		return c.array(out, depth+1)
	case ch == '"':
		return c.string(out)
	case ch == '-' || ch >= '0' && ch <= '9':
		return c.number(out)
	case ch == 't':
		return c.literal(out, "true")
	case ch == 'f':
		return c.literal(out, "false")
	case ch == 'n':
		return c.literal(out, "null")
	default:
		return out, c.fail(fmt.Sprintf("unexpected %q", ch))
	}
}

func (c *canon) literal(out []byte, lit string) ([]byte, error) {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
		return out, c.fail("not a JSON value")
	}
	c.pos += len(lit)
	return append(out, lit...), nil
}

// number copies a number as written, after checking it is one.
func (c *canon) number(out []byte) ([]byte, error) {
	start := c.pos
	digits := func() int {
		n := 0
		for c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
			c.pos++
			n++
		}
		return n
	}
	if c.in[c.pos] == '-' {
		c.pos++
	}
	if c.pos < len(c.in) && c.in[c.pos] == '0' {
		c.pos++
	} else if digits() == 0 {
		return out, c.fail("bad number")
	}
	if c.pos < len(c.in) && c.in[c.pos] == '.' {
		c.pos++
		if digits() == 0 {
			return out, c.fail("bad number")
		}
	}
	if c.pos < len(c.in) && (c.in[c.pos] == 'e' || c.in[c.pos] == 'E') {
		c.pos++
		if c.pos < len(c.in) && (c.in[c.pos] == '+' || c.in[c.pos] == '-') {
			c.pos++
		}
		if digits() == 0 {
			return out, c.fail("bad number")
		}
	}
	return append(out, c.in[start:c.pos]...), nil
}

func (c *canon) array(out []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return out, c.fail("nested too deep")
	}
	c.pos++ // [
	out = append(out, '[')
	c.space()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		return append(out, ']'), nil
	}
	for {
		var err error
		if out, err = c.value(out, depth); err != nil {
			return out, err
		}
		c.space()
		if c.pos >= len(c.in) {
			return out, c.fail("unexpected end")
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			out = append(out, ',')
		case ']':
			c.pos++
			return append(out, ']'), nil
		default:
			return out, c.fail("want , or ]")
		}
	}
}

func (c *canon) object(out []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return out, c.fail("nested too deep")
	}
	c.pos++ // {
	open := len(out)
	out = append(out, '{')
	c.space()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		return append(out, '}'), nil
	}
	for len(c.members) <= depth {
		c.members = append(c.members, nil)
	}
	ms := c.members[depth][:0]
	for {
		c.space()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return out, c.fail("want a member name")
		}
		m := member{start: len(out)}
		var err error
		if out, err = c.string(out); err != nil {
			return out, err
		}
		m.keyEnd = len(out) - 1
		c.space()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return out, c.fail("want :")
		}
		c.pos++
		out = append(out, ':')
		if out, err = c.value(out, depth); err != nil {
			return out, err
		}
		m.end = len(out)
		ms = append(ms, m)
		c.space()
		if c.pos >= len(c.in) {
			return out, c.fail("unexpected end")
		}
		if c.in[c.pos] == '}' {
			c.pos++
			break
		}
		if c.in[c.pos] != ',' {
			return out, c.fail("want , or }")
		}
		c.pos++
		out = append(out, ',')
	}
	c.members[depth] = ms
	key := func(m member) []byte { return out[m.start+1 : m.keyEnd] }
	byKey := func(a, b member) int { return bytes.Compare(key(a), key(b)) }
	if !slices.IsSortedFunc(ms, byKey) {
		// Stable: members with one key keep their order (the API takes the
		// last). The members are copied aside and written back in order;
		// nested objects have finished with the scratch space by now.
		slices.SortStableFunc(ms, byKey)
		c.scratch = append(c.scratch[:0], out[open+1:]...)
		base := open + 1
		out = out[:base]
		for i, m := range ms {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, c.scratch[m.start-base:m.end-base]...)
		}
	}
	return append(out, '}'), nil
}

// string appends the string at c.pos in canonical form. A string with no
// escape, no U+2028 or U+2029 and valid UTF-8 is already canonical and is
// copied; any other is unescaped and written again.
func (c *canon) string(out []byte) ([]byte, error) {
	c.pos++ // "
	start := c.pos
	for c.pos < len(c.in) {
		ch := c.in[c.pos]
		switch {
		case ch == '"':
			c.pos++
			out = append(out, '"')
			out = append(out, c.in[start:c.pos-1]...)
			return append(out, '"'), nil
		case ch == '\\':
			return c.escaped(out, start)
		case ch < 0x20:
			return out, c.fail("control character in a string")
		case ch < utf8.RuneSelf:
			c.pos++
		default:
			r, size := utf8.DecodeRune(c.in[c.pos:])
			if r == utf8.RuneError && size == 1 {
				return out, c.fail("invalid UTF-8")
			}
			if r == '\u2028' || r == '\u2029' {
				return c.escaped(out, start)
			}
			c.pos += size
		}
	}
	return out, c.fail("unterminated string")
}

// escaped unescapes the string that began at start into c.str and appends
// it in canonical form.
func (c *canon) escaped(out []byte, start int) ([]byte, error) {
	s := append(c.str[:0], c.in[start:c.pos]...)
	for {
		if c.pos >= len(c.in) {
			return out, c.fail("unterminated string")
		}
		ch := c.in[c.pos]
		switch {
		case ch == '"':
			c.pos++
			c.str = s
			// A string, not the []byte: AppendString takes one; this path is
			// the rare string with escapes.
			return jsonenc.AppendString(out, string(s), false), nil
		case ch < 0x20:
			return out, c.fail("control character in a string")
		case ch != '\\':
			r, size := utf8.DecodeRune(c.in[c.pos:])
			if r == utf8.RuneError && size == 1 {
				return out, c.fail("invalid UTF-8")
			}
			s = append(s, c.in[c.pos:c.pos+size]...)
			c.pos += size
			continue
		}
		if c.pos+1 >= len(c.in) {
			return out, c.fail("unterminated string")
		}
		esc := c.in[c.pos+1]
		c.pos += 2
		switch esc {
		case '"', '\\', '/':
			s = append(s, esc)
		case 'b':
			s = append(s, '\b')
		case 'f':
			s = append(s, '\f')
		case 'n':
			s = append(s, '\n')
		case 'r':
			s = append(s, '\r')
		case 't':
			s = append(s, '\t')
		case 'u':
			r, ok := c.hex4()
			if !ok {
				return out, c.fail(`bad \u escape`)
			}
			if utf8.ValidRune(r) {
				s = utf8.AppendRune(s, r)
				break
			}
			// A surrogate: only a high one followed by a low one is a
			// character. A lone one is no Unicode text, and encoding/json
			// would read it as U+FFFD, so that "\ud800" and "\ufffd"
			// would be one key: refuse it instead.
			if r >= 0xdc00 || !bytes.HasPrefix(c.in[c.pos:], []byte(`\u`)) {
				return out, c.fail("lone surrogate")
			}
			c.pos += 2
			lo, ok := c.hex4()
			if !ok || lo < 0xdc00 || lo > 0xdfff {
				return out, c.fail("lone surrogate")
			}
			s = utf8.AppendRune(s, 0x10000+(r-0xd800)<<10+(lo-0xdc00))
		default:
			return out, c.fail("bad escape")
		}
	}
}

// hex4 reads the four hex digits of a \u escape.
func (c *canon) hex4() (rune, bool) {
	if c.pos+4 > len(c.in) {
		return 0, false
	}
	var r rune
	for _, h := range c.in[c.pos : c.pos+4] {
		switch {
		case h >= '0' && h <= '9':
			h -= '0'
		case h >= 'a' && h <= 'f':
			h -= 'a' - 10
		case h >= 'A' && h <= 'F':
			h -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	c.pos += 4
	return r, true
}
