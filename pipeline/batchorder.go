package pipeline

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/gptbatch/gptbatch/jsonl"
)

// done is a line's result on its way to the ordered writer: what the
// submitter and the collector send it.
type done struct {
	seq int32 // the line's place among the run's lines
	res *jsonl.Result
}

// What orderBatchResults holds of a line besides the run its result waits
// in.
const (
	noResult = -1 // no result yet
	written  = -2 // its result is written
	inMemory = -3 // its result waits in memory
)

// orderBatchResults is the ordered writer of --via batch: it takes the
// results of the lines no batch answers (the submitter's, on unsent) and
// of those a batch answers (the collector's, on collected) and sends each
// to out in input order, or at once with --unordered. It alone keeps which
// lines have their result: the first a line gets is its result. A result
// that comes before its turn (answers arrive hours apart, batches end in
// any order, and a batch's output file in an order of its own) waits
// (parking): the window it holds is a few bytes a line, not the results.
// Once both inputs are closed no more results come: those still waiting
// are written in order. It closes out.
func (r *runner) orderBatchResults(ctx context.Context, dir string, unsent, collected <-chan []done, out chan<- []*jsonl.Result) error {
	defer close(out)
	p := &parking{dir: dir, mem: map[int32]*jsonl.Result{}}
	defer p.close()
	var at []int32 // by line: the run its result waits in, noResult, written or inMemory
	next := 0      // ordered: the line whose result is written next
	var block []*jsonl.Result
	// emit sends the results in block to out once there are n of them.
	emit := func(n int) error {
		if len(block) < max(n, 1) {
			return nil
		}
		err := send(ctx, out, block)
		block = nil
		return err
	}
	// write sends the waiting result of line seq, then the ones waiting
	// after it in turn.
	write := func(seq int) error {
		for ; seq < len(at) && at[seq] != noResult && at[seq] != written; seq++ {
			res, err := p.take(int32(seq), at[seq])
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			block = append(block, res)
			if err := emit(blockLen); err != nil {
				return err
			}
			at[seq] = written
			next = seq + 1
		}
		return nil
	}
	for unsent != nil || collected != nil {
		var got []done
		var ok bool
		select {
		case got, ok = <-unsent:
			if !ok {
				unsent = nil
			}
		case got, ok = <-collected:
			if !ok {
				collected = nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		for _, d := range got {
			for len(at) <= int(d.seq) {
				at = append(at, noResult)
			}
			if at[d.seq] != noResult {
				continue // it has its result
			}
			if !r.cfg.Unordered && int(d.seq) != next {
				at[d.seq] = inMemory
				if err := p.park(d, at); err != nil {
					return &Error{Code: ExitFailed, Err: err}
				}
				continue
			}
			block = append(block, d.res)
			at[d.seq] = written
			if !r.cfg.Unordered {
				next = int(d.seq) + 1
				if err := write(next); err != nil {
					return err
				}
			}
		}
		if err := emit(1); err != nil {
			return err
		}
	}
	// What still waits follows a line that got no result: the run
	// failed, and what it has is written in order.
	for seq := range at {
		if err := write(seq); err != nil {
			return err
		}
	}
	return emit(1)
}

// blockLen is the most results a block to emit holds, and parkLen the
// most that wait in memory: more are written to disk in a run, sorted by
// line. Each run is read back in order through a buffer of its own, so
// that the results of a batch whose output came in an order of its own
// are read back in input order without a read(2) each.
const (
	blockLen = 1024
	parkLen  = 4096
	runBuf   = 32 << 10
)

// parking is where results wait for their turn: the last few in memory,
// the others in sorted runs in a temporary file in dir. The line whose
// turn it is is always at the head of its run. A run is written once, in
// one go, and read once, in order: in the file, a result is its length
// (4 bytes, little-endian) and its binary encoding (jsonl.Result's
// AppendBinary).
type parking struct {
	dir  string
	mem  map[int32]*jsonl.Result
	file *os.File      // made when a run is first written
	w    *bufio.Writer // to file
	size int64         // bytes written to file
	runs []*bufio.Reader
	left []int // results not yet read of each run
}

// park keeps d's result until its turn; at says where each line's waits,
// and learns where those in memory go when they are written in a run.
func (p *parking) park(d done, at []int32) error {
	p.mem[d.seq] = d.res
	if len(p.mem) < parkLen {
		return nil
	}
	if p.file == nil {
		var err error
		if p.file, err = tempFile(p.dir, "results"); err != nil {
			return err
		}
		p.w = bufio.NewWriterSize(p.file, 256<<10)
	}
	seqs := make([]int32, 0, len(p.mem))
	for seq := range p.mem {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	run, start := int32(len(p.runs)), p.size
	var b []byte
	for _, seq := range seqs {
		b, _ = p.mem[seq].AppendBinary(append(b[:0], 0, 0, 0, 0)) // it never fails
		binary.LittleEndian.PutUint32(b, uint32(len(b)-4))
		p.w.Write(b) // its error is Flush's
		p.size += int64(len(b))
		at[seq] = run
		delete(p.mem, seq)
	}
	if err := p.w.Flush(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	p.runs = append(p.runs, bufio.NewReaderSize(io.NewSectionReader(p.file, start, p.size-start), runBuf))
	p.left = append(p.left, len(seqs))
	return nil
}

// take is the result of line seq, which waits where at says: in memory, or
// at the head of run at.
func (p *parking) take(seq, at int32) (*jsonl.Result, error) {
	if at == inMemory {
		res := p.mem[seq]
		delete(p.mem, seq)
		return res, nil
	}
	r := p.runs[at]
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	b := make([]byte, binary.LittleEndian.Uint32(h[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if p.left[at]--; p.left[at] == 0 {
		p.runs[at] = nil // read to its end: its buffer goes
	}
	res := new(jsonl.Result)
	if err := res.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return res, nil
}

// close removes the file of the runs.
func (p *parking) close() {
	if p.file != nil {
		removeTemp(p.file)
	}
}
