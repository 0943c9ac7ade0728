package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
)

// AppendString must write what encoding/json writes, or results and
// ledger lines would change under the users' jq and diff.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{
		"", "plain words", `quote " and \ backslash`, "tab\tnew\nline\rreturn",
		"\b\f\x00\x01\x1f\x7f", "<b> & </b>", "héllo wörld ✓ 日本語 🙂",
		"line\u2028sep\u2029para", "bad \xff\xfe utf-8 \xc3", "cut rune \xe6\x97",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s, true); !bytes.Equal(got, want) {
			t.Errorf("AppendString(%q, html) = %s, encoding/json writes %s", s, got, want)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if got := AppendString([]byte("kept"), s, false); !bytes.Equal(got, append([]byte("kept"), want...)) {
			t.Errorf("AppendString(%q) = %s, an Encoder without HTML escaping writes %s", s, got, want)
		}
	})
}
