package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCanonical(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"whitespace goes", " { \"a\" :\t[ 1 , 2 ]\r\n} ", `{"a":[1,2]}`},
		{"keys sorted at every depth", `{"b":{"y":1,"x":2},"a":[{"d":1,"c":2}]}`, `{"a":[{"c":2,"d":1}],"b":{"x":2,"y":1}}`},
		{"array order kept", `[3,1,2]`, `[3,1,2]`},
		{"numbers as written", `[1.0,1,1e2,1E+2,-0,0.10]`, `[1.0,1,1e2,1E+2,-0,0.10]`},
		{"escapes become characters", `"\u00e9\/\u0041\ud83d\ude00"`, `"é/A😀"`},
		{"characters that must be escaped are, one way", `"\u0022\u005c\u000a\u0001\u2028<>&"`, `"\"\\\n\u0001\u2028<>&"`},
		{"an unescaped U+2028 is escaped", "\"a\u2028b\"", `"a\u2028b"`},
		{"duplicate keys keep their order", `{"b":0,"a":2,"a":1}`, `{"a":2,"a":1,"b":0}`},
		{"keys compared by value", `{"\u0062":1,"a":2}`, `{"a":2,"b":1}`},
		{"literals", `[true,false,null]`, `[true,false,null]`},
		{"empty containers", `{"a":{},"b":[]}`, `{"a":{},"b":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonical([]byte(tc.in))
			if err != nil || string(got) != tc.want {
				t.Errorf("Canonical(%s) = %s, %v, want %s", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestCanonicalRefuses(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		``, `{`, `{"a"}`, `{"a":1,}`, `[1,]`, `01`, `1.`, `.5`, `1e`, `+1`, `tru`, `nul`,
		`"a`, `"\x"`, `"\u12"`, "\"a\tb\"", `{} {}`, `{"a":1} x`, `'a'`,
		`"\ud800"`, `"\udc00"`, `"\ud800\u0041"`, "\"\xff\"", "\"\xc3\"",
		strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	} {
		if got, err := Canonical([]byte(in)); !errors.Is(err, ErrNotCacheable) {
			t.Errorf("Canonical(%q) = %q, %v, want ErrNotCacheable", in, got, err)
		}
	}
}

// canonicalSeeds are bodies of the three endpoints and the corners of the
// canonical form, for the fuzzers.
var canonicalSeeds = []string{
	`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":256}`,
	`{"model":"o4-mini","input":[{"role":"user","content":[{"type":"input_text","text":"x"}]}],"reasoning":{"effort":"high"},"store":false}`,
	`{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"base64","dimensions":256}`,
	`{"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{},"a":{}}}}}],"tool_choice":"auto"}`,
	`{"b":1,"a":2,"a":3,"\u00e9":"\u00e9","\ud83d\ude00":[1.0,-0,2e-3,1E+9]}`,
	` [ "\"\\\/\b\f\n\r\t\u0001\u2029" , true , false , null , { } , [ ] ] `,
	"\"plain \u2028 text é 日本\"",
	`{"a":{"b":{"c":{"d":[[[{"z":1,"y":2}]]]}}}}`,
}

func FuzzCanonical(f *testing.F) {
	for _, s := range canonicalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Canonical(in)
		if err != nil {
			// Refused: then it is not JSON, or not Unicode.
			if json.Valid(in) && utf8.Valid(in) && !bytes.Contains(in, []byte(`\u`)) && depth(in) <= maxDepth {
				t.Fatalf("Canonical(%q) = %v, but it is valid JSON", in, err)
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("Canonical(%q) = %q, but it is not JSON", in, got)
		}
		again, err := Canonical(got)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("Canonical(%q) = %q, and again %q, %v", in, got, again, err)
		}
		// The same value, to encoding/json.
		if a, b := decode(t, in), decode(t, got); !jsonEqual(a, b) {
			t.Fatalf("Canonical(%q) = %q: another value (%v, %v)", in, got, a, b)
		}
		// The same value written another way has the same canonical form.
		seed := fnv.New64a()
		seed.Write(in)
		other := rewrite(t, in, rand.New(rand.NewPCG(seed.Sum64(), 1)))
		if got2, err := Canonical(other); err != nil || !bytes.Equal(got2, got) {
			t.Fatalf("Canonical(%q) = %q, but Canonical(%q), the same value, = %q, %v", in, got, other, got2, err)
		}
		k1, err1 := KeyOf(chat, openai, in)
		k2, err2 := KeyOf(chat, openai, other)
		if err1 != nil || err2 != nil || k1 != k2 {
			t.Fatalf("KeyOf(%q) = %v, %v, but KeyOf(%q), the same value, = %v, %v", in, k1, err1, other, k2, err2)
		}
	})
}

// depth is how deep in has nested, roughly (brackets in strings count).
func depth(in []byte) int {
	d, most := 0, 0
	for _, c := range in {
		switch c {
		case '[', '{':
			d++
			most = max(most, d)
		case ']', '}':
			d--
		}
	}
	return most
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

// jsonEqual compares decoded values; numbers by their text.
func jsonEqual(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		return ok && slices.EqualFunc(a, b, jsonEqual)
	default:
		return a == b
	}
}

// node is a JSON value as encoding/json's tokens give it: members in
// order, duplicates kept, numbers as written.
type node struct {
	tok   json.Token // a scalar: string, json.Number, bool, nil
	obj   bool
	arr   bool
	keys  []string
	elems []*node
}

func parseNode(d *json.Decoder) (*node, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		n := &node{obj: true}
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return nil, err
			}
			v, err := parseNode(d)
			if err != nil {
				return nil, err
			}
			n.keys = append(n.keys, k.(string))
			n.elems = append(n.elems, v)
		}
		_, err := d.Token()
		return n, err
	case json.Delim('['):
		n := &node{arr: true}
		for d.More() {
			v, err := parseNode(d)
			if err != nil {
				return nil, err
			}
			n.elems = append(n.elems, v)
		}
		_, err := d.Token()
		return n, err
	}
	return &node{tok: tok}, nil
}

// rewrite writes in again as the same JSON value, another way: members in
// reverse order of their keys (those with one key still in their order),
// characters escaped or not at random, whitespace anywhere. It is written
// apart from Canonical, from encoding/json's tokens; in is one Canonical
// accepted, so its strings are Unicode and the tokens hold them exactly.
func rewrite(t *testing.T, in []byte, r *rand.Rand) []byte {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	n, err := parseNode(d)
	if err != nil {
		t.Fatalf("tokens of %q: %v", in, err)
	}
	if _, err := d.Token(); err != io.EOF {
		t.Fatalf("tokens of %q: more after the value", in)
	}
	var b []byte
	ws := func() {
		for r.IntN(4) == 0 {
			b = append(b, " \t\r\n"[r.IntN(4)])
		}
	}
	str := func(s string) {
		b = append(b, '"')
		for _, c := range s {
			switch {
			case c == '"' || c == '\\' || c < 0x20 || r.IntN(3) == 0:
				hexes := "0123456789abcdef"
				if r.IntN(2) == 0 {
					hexes = "0123456789ABCDEF"
				}
				esc := func(u rune) {
					b = append(b, '\\', 'u', hexes[u>>12&15], hexes[u>>8&15], hexes[u>>4&15], hexes[u&15])
				}
				if c > 0xffff {
					c -= 0x10000
					esc(0xd800 + c>>10)
					esc(0xdc00 + c&0x3ff)
				} else {
					esc(c)
				}
			default:
				b = utf8.AppendRune(b, c)
			}
		}
		b = append(b, '"')
	}
	var write func(n *node)
	write = func(n *node) {
		ws()
		switch {
		case n.obj:
			order := make([]int, len(n.keys))
			for i := range order {
				order[i] = i
			}
			slices.SortStableFunc(order, func(i, j int) int { return strings.Compare(n.keys[j], n.keys[i]) })
			b = append(b, '{')
			for i, m := range order {
				if i > 0 {
					b = append(b, ',')
				}
				ws()
				str(n.keys[m])
				ws()
				b = append(b, ':')
				write(n.elems[m])
			}
			ws()
			b = append(b, '}')
		case n.arr:
			b = append(b, '[')
			for i, e := range n.elems {
				if i > 0 {
					b = append(b, ',')
				}
				write(e)
			}
			ws()
			b = append(b, ']')
		default:
			switch v := n.tok.(type) {
			case string:
				str(v)
			case json.Number:
				b = append(b, v...)
			case bool:
				b = append(b, []byte(map[bool]string{true: "true", false: "false"}[v])...)
			case nil:
				b = append(b, "null"...)
			}
		}
		ws()
	}
	write(n)
	return b
}
