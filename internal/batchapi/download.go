package batchapi

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
)

// Download streams the file id with Retry's retries: a download that
// breaks off is started again, and the bytes already read are skipped (a
// file's content does not change), so that its reader reads the file once
// through, whatever breaks. It starts the first try before it returns: a
// file that cannot be read at all (one deleted: 404) is its error. Once
// the retries end, Read returns the last try's error (Failure sorts it).
// ctx bounds every try.
func (c *Client) Download(ctx context.Context, id string) (*Stream, error) {
	d := &Stream{ctx: ctx, c: c, id: id, tries: tries{c: c, what: "download " + id}}
	for d.body == nil && d.err == nil {
		d.open()
	}
	if d.err != nil {
		return nil, d.err
	}
	return d, nil
}

// Stream is a file being downloaded (Download). It keeps its caller's
// context, as an HTTP response's body keeps its request's: a try started
// by a Read is bound by it.
type Stream struct {
	ctx   context.Context
	c     *Client
	id    string
	tries tries
	body  io.ReadCloser // the try under way; nil between two
	read  int64         // the bytes read: a new try skips them
	err   error         // why it ended
	// Blocks' reader of lines, made by its first call; whether they
	// ended, the read that ended them early, and the last block's size.
	lines  *bufio.Reader
	eof    bool
	broken error
	last   int
}

// Read reads the file on, starting a try again where one broke off.
func (d *Stream) Read(p []byte) (int, error) {
	for d.err == nil {
		if d.body == nil {
			d.open()
			continue
		}
		n, err := d.body.Read(p)
		d.read += int64(n)
		if err != nil && err != io.EOF {
			// Broken off: the next Read starts it again.
			d.body.Close()
			d.body = nil
			d.again(err)
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, d.err
}

// open starts a try: the file, from past the bytes already read. One that
// fails waits out its back-off, or ends the stream (again).
func (d *Stream) open() {
	body, err := d.c.content(d.ctx, d.id)
	if err == nil {
		if _, err = io.CopyN(io.Discard, body, d.read); err != nil {
			body.Close()
		}
	}
	if err != nil {
		d.again(err)
		return
	}
	d.body = body
}

// again waits out the back-off after a try that failed with err, or ends
// the stream with err when the retries are over.
func (d *Stream) again(err error) {
	if _, ok := d.tries.again(d.ctx, err); !ok {
		d.err = err
	}
}

// Close ends the download.
func (d *Stream) Close() error {
	if d.err == nil {
		d.err = os.ErrClosed
	}
	if d.body == nil {
		return nil
	}
	err := d.body.Close()
	d.body = nil
	return err
}

// Blocks hold this many lines, or a line and more up to this many bytes.
const (
	blockLines = 256
	blockBytes = 1 << 20
)

// Blocks reads the file on in blocks of whole lines: up to n blocks and
// at least one, none at its end. It is a source for a pool that parses
// them (a block is a worker's task). A read that fails for good ends the
// blocks after the whole lines before it, and leaves its error to Err,
// for its caller once the blocks are parsed: a download that fails late
// keeps what it had.
func (d *Stream) Blocks(ctx context.Context, n int) ([][]byte, error) {
	if d.lines == nil {
		d.lines = bufio.NewReaderSize(d, 256<<10)
	}
	var blocks [][]byte
	for len(blocks) < n && !d.eof {
		// The size of the last block, as the lines of a file are much
		// alike: appending to a growing block was a tenth of collecting.
		block := make([]byte, 0, d.last+d.last/8)
		lines := 0
		for lines < blockLines && len(block) < blockBytes {
			chunk, err := d.lines.ReadSlice('\n')
			block = append(block, chunk...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF {
				d.eof = true
				break
			}
			if err != nil {
				d.broken = err
				block = block[:bytes.LastIndexByte(block, '\n')+1] // whole lines only
				d.eof = true
				break
			}
			lines++
		}
		if len(block) > 0 {
			blocks = append(blocks, block)
			d.last = min(len(block), blockBytes)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return blocks, nil
}

// Err is the read that ended Blocks before the file's end, or nil.
func (d *Stream) Err() error { return d.broken }

// content streams the file id: one try of a Download. It may take long,
// but a pause of the timeout ends it (the body's Read returns a network
// failure).
func (c *Client) content(ctx context.Context, id string) (io.ReadCloser, error) {
	w := c.watch(ctx)
	raw, err := c.oa.GetFileContent(w.ctx, id)
	if err != nil {
		w.stop()
		return nil, w.err(err)
	}
	return watchedBody{fedReader{raw.ReadCloser, w}, raw.ReadCloser}, nil
}

// watchedBody is a download's body, its watchdog stopped when it is
// closed.
type watchedBody struct {
	fedReader
	c io.Closer
}

func (b watchedBody) Read(p []byte) (int, error) {
	n, err := b.fedReader.Read(p)
	return n, b.w.err(err)
}

func (b watchedBody) Close() error {
	err := b.c.Close()
	b.w.stop()
	return err
}
