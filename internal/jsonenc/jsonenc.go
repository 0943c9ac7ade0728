// Package jsonenc writes JSON values byte for byte as encoding/json does,
// without its reflection, for the writers that put out lines by the
// hundred thousand: results (jsonl) and ledger lines (budget); and the one
// codec of the amounts of dollars both carry, exact in picodollars
// (AppendDollars, ParseDollars).
package jsonenc

import "unicode/utf8"

// AppendString appends s to b as a JSON string, byte for byte as
// encoding/json writes it: with escapeHTML, as json.Marshal does (<, > and
// & as \u003c, \u003e and \u0026); without, as an Encoder told
// SetEscapeHTML(false). Invalid UTF-8 becomes U+FFFD, and U+2028 and
// U+2029 are escaped, as there. It is encoding/json's appendString,
// without the reflection and the buffer around it: results and ledger
// lines are written by the hundred thousand, and their strings are most of
// their bytes.
func AppendString(b []byte, s string, escapeHTML bool) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || c != '<' && c != '>' && c != '&') {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
