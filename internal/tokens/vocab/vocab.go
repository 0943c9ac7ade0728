// Package vocab points tiktoken-go at the BPE vocabularies compiled into
// the binary (tiktoken-go-loader's), read fast. It is a package of its own
// because tiktoken-go keeps its loader in one unsynchronised variable: the
// counter (package tokens) and the fake API (internal/openaitest), which
// must not share a counter, share this one setter, or each setting its own
// would race with the other's GetEncoding.
package vocab

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"path"
	"strconv"
	"sync"

	"github.com/pkoukk/tiktoken-go"
	"github.com/pkoukk/tiktoken-go-loader/assets"
)

// Offline points tiktoken-go, for the whole process, at the vocabularies
// compiled into the binary, so that nothing ever downloads one. Every
// package that builds a tiktoken encoder calls it first.
var Offline = sync.OnceFunc(func() {
	tiktoken.SetBpeLoader(fastLoader{})
})

// fastLoader reads the BPE ranks compiled into tiktoken-go-loader, as its
// OfflineLoader does, in a third of the time: one pass over the file, no
// per-line slices, the map sized up front. Every gptbatch pays this at
// start, and several started at once share two cores, so it shows in how
// soon the first request goes out.
type fastLoader struct{}

// LoadTiktokenBpe implements tiktoken.BpeLoader.
func (fastLoader) LoadTiktokenBpe(file string) (map[string]int, error) {
	data, err := assets.Assets.ReadFile(path.Base(file))
	if err != nil {
		return nil, err
	}
	ranks := make(map[string]int, bytes.Count(data, []byte("\n"))+1)
	tok := make([]byte, 0, 128)
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		sp := bytes.IndexByte(line, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("%s line %d: no rank", file, n)
		}
		if n := base64.StdEncoding.DecodedLen(sp); cap(tok) < n {
			tok = make([]byte, n)
		}
		tok = tok[:cap(tok)]
		k, err := base64.StdEncoding.Decode(tok, line[:sp])
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", file, n, err)
		}
		rank, err := strconv.Atoi(string(line[sp+1:]))
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", file, n, err)
		}
		ranks[string(tok[:k])] = rank
	}
	return ranks, nil
}
