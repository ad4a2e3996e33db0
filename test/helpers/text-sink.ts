import { Writable } from 'node:stream';

/** A stream that keeps what is written to it as text (a run's log, a console). */
export function textSink(): Writable & { text: string } {
  const sink = Object.assign(
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        sink.text += chunk.toString();
        done();
      },
    }),
    { text: '' },
  );
  return sink;
}
