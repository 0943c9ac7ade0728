package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"time"
)

// packLinger is how long a pack that is not full waits for more lines
// before it may go: long enough for the lines of a batch on disk to fill
// it, short enough that lines trickling in are not held back long.
const packLinger = 500 * time.Millisecond

// maxRiders is the most lines the cache answers that a pack carries: in
// input order they are read among its inputs and after them, while it
// fills, and their results must follow its first input's. A pack of new
// inputs gathers them from among this many answered lines.
const maxRiders = 1024

// pack is the pack stage (--pack): it joins runs of consecutive
// single-input embeddings lines that are alike in all but their input
// into one request of up to --pack inputs, within the API's limits and
// the gate's. A full pack goes on at once; one that is not goes when the
// input ends, or once it has waited packLinger and the stage after it
// will take it, so that it fills while a limit holds the sender back.
// Lines the cache answers do not end a pack: in input order the pack
// carries them (riders), up to maxRiders and as the cache's room for
// them allows (cacheRun.riderRoom); unordered, they pass. Every other
// line passes through in its place.
func (r *runner) pack(ctx context.Context, in <-chan *item, out chan<- *item) error {
	defer close(out)
	var cur *item               // the pack being filled; nil when there is none
	var linger <-chan time.Time // fires when cur has waited packLinger
	lingered := false           // cur has waited packLinger
	var riders []*item          // lines the cache answers, read while cur fills
	flush := func() error {
		if cur == nil {
			return nil
		}
		p := cur.packed()
		p.riders, riders = riders, nil
		cur, linger, lingered = nil, nil, false
		return send(ctx, out, p)
	}
	for in != nil || cur != nil {
		var ready chan<- *item // nil (never ready) until cur may go
		var next *item
		if cur != nil && (lingered || in == nil) {
			ready, next = out, cur.packed()
			next.riders = riders
		}
		select {
		case ready <- next:
			cur, linger, lingered, riders = nil, nil, false, nil
		case <-linger:
			linger, lingered = nil, true
		case it, ok := <-in:
			if !ok {
				in = nil // closed: never ready again
				continue
			}
			if it.cached != nil && cur != nil && (r.cfg.Unordered || r.cache.ride()) {
				if r.cfg.Unordered {
					if err := send(ctx, out, it); err != nil {
						return err
					}
					continue
				}
				riders = append(riders, it)
				if len(riders) >= maxRiders {
					if err := flush(); err != nil {
						return err
					}
				}
				continue
			}
			if it.result != nil || it.packKey == "" || it.cached != nil {
				if err := flush(); err != nil {
					return err
				}
				if err := send(ctx, out, it); err != nil {
					return err
				}
				continue
			}
			if !it.exact {
				// A pack's usage is split by its inputs' exact counts.
				r.recount(it)
			}
			if cur != nil && !r.fits(cur, it) {
				if err := flush(); err != nil {
					return err
				}
			}
			if cur == nil {
				cur, linger = newPack(it), r.cfg.Clock.After(packLinger)
			} else {
				cur.add(it)
			}
			if len(cur.members) >= r.cfg.Pack {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// fits reports whether it may join pack: alike, and within the API's
// limits and what the gate can ever admit.
func (r *runner) fits(pack, it *item) bool {
	if it.packKey != pack.packKey || len(pack.members) >= maxEmbeddingInputs || pack.prompt+it.prompt > maxEmbeddingRequestTokens {
		return false
	}
	est := pack.est
	est.Tokens += it.est.Tokens
	est.Cost += it.est.Cost
	return r.cfg.Gate.Check(est) == nil
}

// newPack is a pack of first alone.
func newPack(first *item) *item {
	p := *first
	p.members = []*item{first}
	p.body, p.input, p.result, p.results = nil, nil, nil, nil
	p.lineCache = lineCache{} // the members' own
	p.exact = true
	return &p
}

// add puts it in the pack.
func (p *item) add(it *item) {
	p.members = append(p.members, it)
	p.prompt += it.prompt
	p.est.Tokens += it.est.Tokens
	p.est.Cost += it.est.Cost
}

// packed is what goes on for a pack: a pack of one is its line.
func (p *item) packed() *item {
	if len(p.members) == 1 {
		return p.members[0]
	}
	return p
}

// packBody is a pack's body to send: its first line's with every member's
// input in a list, built once.
func (it *item) packBody() []byte {
	if it.body != nil {
		return it.body
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(it.members[0].body, &body); err != nil {
		panic(err) // prepare wrote it
	}
	var in bytes.Buffer
	in.WriteByte('[')
	for i, m := range it.members {
		if i > 0 {
			in.WriteByte(',')
		}
		in.Write(m.input)
	}
	in.WriteByte(']')
	body["input"] = in.Bytes()
	b, err := json.Marshal(body)
	if err != nil {
		panic(err) // every value is valid JSON
	}
	it.body = b
	return b
}
