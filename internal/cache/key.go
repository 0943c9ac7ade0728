package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"strings"
)

// keyVersion opens every key's hash. A change to what a key covers or to
// the canonical form gets a new version, so that an older cache misses
// instead of answering for another request.
const keyVersion = "gptbatch-cache-v1"

// Key names one request: what KeyOf hashes. The zero Key names none.
type Key [sha256.Size]byte

// String is the key in hex.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// KeyOf is the key of the request body sends to endpoint at baseURL:
// SHA-256 over keyVersion, the endpoint, the base URL (trailing slashes
// removed) and the body's canonical form (see Canonical), each length
// prefixed, so that no two requests share one.
//
// endpoint is the path the request goes to ("/v1/chat/completions",
// "/v1/responses", "/v1/embeddings"); baseURL is the API's base URL as
// configured ("https://api.openai.com/v1"). body must be the body as sent,
// the wire body: every field the API receives is in the key, and nothing
// else should be. gptbatch's own per-line fields (id, custom_id,
// metadata, the line number) never reach the API and must not be in it,
// or a renamed line would miss. A body that is not cacheable (see
// Canonical) is an error wrapping ErrNotCacheable: send it without the
// cache.
func KeyOf(endpoint, baseURL string, body []byte) (Key, error) {
	var k Keyer
	return k.Key(endpoint, baseURL, body)
}

// Keyer computes keys as KeyOf does, reusing its buffers from one key to
// the next: the pipeline's way to key lines by the hundred thousand. The
// zero value is ready; a Keyer is not safe for concurrent use.
type Keyer struct {
	c   canon
	buf []byte
	h   hash.Hash
}

// Key is KeyOf(endpoint, baseURL, body).
func (kr *Keyer) Key(endpoint, baseURL string, body []byte) (Key, error) {
	canon, err := kr.c.append(kr.buf[:0], body)
	kr.buf = canon
	if err != nil {
		return Key{}, err
	}
	if kr.h == nil {
		kr.h = sha256.New()
	}
	kr.h.Reset()
	var n [binary.MaxVarintLen64]byte
	field := func(b []byte) {
		kr.h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		kr.h.Write(b)
	}
	field([]byte(keyVersion))
	field([]byte(endpoint))
	field([]byte(strings.TrimRight(baseURL, "/")))
	field(canon)
	var k Key
	kr.h.Sum(k[:0])
	return k, nil
}
