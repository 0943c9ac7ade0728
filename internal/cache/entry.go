package cache

import (
	"encoding/binary"
	"time"
)

// entryFormat opens every entry's head, in the file and in Redis.
const entryFormat = 1

// Layout of an entry's head: the format byte, the sum, created (Unix
// milliseconds), cost and the body's size (big-endian int64s), then the
// endpoint and model (uvarint length first). Up to offRest it has a fixed
// size, so that Redis's Prune and Stats read it with GETRANGE, without
// the body that follows it there.
const (
	offSum     = 1
	offCreated = offSum + 32
	offCost    = offCreated + 8
	offSize    = offCost + 8
	offRest    = offSize + 8
)

// headSize is the size of e's head.
func headSize(e *Entry) int {
	return offRest + 2*binary.MaxVarintLen64 + len(e.Endpoint) + len(e.Model)
}

// appendHead appends e's head, with its sum, to b. Created is stored to
// the millisecond, as the sum has it.
func appendHead(b []byte, e *Entry) []byte {
	sum := e.sum()
	b = append(b, entryFormat)
	b = append(b, sum[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Created.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Cost))
	b = binary.BigEndian.AppendUint64(b, uint64(len(e.Body)))
	b = binary.AppendUvarint(b, uint64(len(e.Endpoint)))
	b = append(b, e.Endpoint...)
	b = binary.AppendUvarint(b, uint64(len(e.Model)))
	return append(b, e.Model...)
}

// readHead reads the head at the start of v as k's entry, without its
// body: its stored sum, the body's size and what follows the head. ok
// is false when v holds no head. name makes the endpoint and model
// strings.
func readHead(k Key, v []byte, name func([]byte) string) (e Entry, sum []byte, size uint64, rest []byte, ok bool) {
	e.Key = k
	if len(v) < offRest || v[0] != entryFormat {
		return e, nil, 0, nil, false
	}
	sum = v[offSum:offCreated]
	e.Created = time.UnixMilli(int64(binary.BigEndian.Uint64(v[offCreated:])))
	e.Cost = int64(binary.BigEndian.Uint64(v[offCost:]))
	size = binary.BigEndian.Uint64(v[offSize:])
	rest = v[offRest:]
	field := func() (string, bool) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return "", false
		}
		s := name(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s, true
	}
	if e.Endpoint, ok = field(); !ok {
		return e, nil, 0, nil, false
	}
	if e.Model, ok = field(); !ok {
		return e, nil, 0, nil, false
	}
	return e, sum, size, rest, true
}

// names makes each endpoint and model one string for every entry of a
// lookup: there are a few of them, and a lookup reads thousands.
type names map[string]string

func (n names) of(b []byte) string {
	s, ok := n[string(b)]
	if !ok {
		s = string(b)
		n[s] = s
	}
	return s
}
