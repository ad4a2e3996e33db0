// `paddock images …`: upload (with a progress bar and throughput on stderr), ls, show, rm,
// download.
import path from 'node:path';
import { Option, type Command } from 'commander';
import type { ImageView } from '../protocol/api.js';
import type { Paddock } from '../client/index.js';
import { durationText } from './duration.js';

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** A progress line: redrawn in place on a terminal, every 10 % otherwise (logs stay short). */
export function progressBar(
  label: string,
  stream: NodeJS.WriteStream = process.stderr,
): { update(done: number, total: number | undefined): void; finish(done: number): void } {
  const started = Date.now();
  let lastStep = -1;
  const line = (done: number, total: number | undefined) => {
    const seconds = Math.max(0.001, (Date.now() - started) / 1000);
    const rate = `${mib(done / seconds)}/s`;
    if (!total) return `${label}: ${mib(done)} ${rate}`;
    const ratio = Math.min(1, done / total);
    const width = 24;
    const filled = Math.round(ratio * width);
    return `${label}: [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(ratio * 100).toFixed(0).padStart(3)}% ${mib(done)}/${mib(total)} ${rate}`;
  };
  return {
    update(done, total) {
      if (stream.isTTY) {
        stream.write(`\r${line(done, total)}`);
        return;
      }
      const step = total ? Math.floor((done / total) * 10) : -1;
      if (step > lastStep) {
        lastStep = step;
        stream.write(`${line(done, total)}\n`);
      }
    },
    finish(done) {
      stream.write(`${stream.isTTY ? '\r' : ''}${line(done, done)}\n`);
    },
  };
}

/** What each access asks of the image, as `images show` says it. */
const accessWords: Record<string, string> = {
  hook: "the image reads the reservation's key the Paddock way (fw_cfg, paddock.authorized_key=)",
  'cloud-init': 'a NoCloud seed gives cloud-init the key, an instance id and a hostname',
  overlay: "an archive appended to the bundle's initrd carries the key and a host key",
};

function describe(image: ImageView): string {
  return [
    `${image.ref}  ${image.format} ${image.arch}  ${mib(image.size)}`,
    `access ${image.access}: ${accessWords[image.access] ?? ''}`,
    `sha256 ${image.sha256}`,
    `owner ${image.owner}, created ${image.createdAt}${image.expiresAt ? `, expires ${image.expiresAt}` : ''}, origin ${image.origin}`,
    ...(image.bootFailures
      ? [`failed to boot ${image.bootFailures} time${image.bootFailures === 1 ? '' : 's'}; last: ${image.lastBootFailure?.split('\n')[0] ?? ''}`]
      : []),
  ].join('\n');
}

export function addImageCommands(cli: Command, client: () => Paddock, print: (value: unknown) => void, table: (rows: string[][]) => string): void {
  const images = cli.command('images').description('disk images and boot bundles stored by Paddock');

  images
    .command('upload')
    .description('upload a file; its sha256 is sent and checked by the server')
    .argument('<file>', 'the disk image or bundle')
    .requiredOption('--name <name>', 'image name')
    .option('--tag <tag>', 'tag', 'latest')
    .addOption(new Option('--format <format>', 'a disk (qcow2, raw) or a kernel and initrd bundle').choices(['qcow2', 'raw', 'bundle']).default('qcow2'))
    .option('--arch <arch>', 'architecture', 'x86_64')
    .addOption(new Option('--access <access>', 'how a reservation key reaches the machine').choices(['hook', 'cloud-init', 'overlay']).default('hook'))
    .option('--expires <duration>', 'a temporary image, removed after this long (e.g. 2h)', durationText)
    .option('--json', 'the stored image as JSON')
    .option('--quiet', 'no progress')
    .action(async (file: string, options) => {
      const bar = options.quiet ? undefined : progressBar(`uploading ${path.basename(file)}`);
      let sent = 0;
      const image = await client().images.upload(file, {
        name: options.name,
        tag: options.tag,
        format: options.format,
        arch: options.arch,
        access: options.access,
        ...(options.expires !== undefined ? { expires: options.expires } : {}),
        onProgress: (done, total) => {
          sent = done;
          bar?.update(done, total);
        },
      });
      bar?.finish(Math.max(sent, image.size));
      print(options.json ? image : describe(image));
    });

  images
    .command('ls')
    .description("Paddock's images and the images each OpenStack pool can boot (POOL/NAME)")
    .option('--local', "only Paddock's own images")
    .option('--json', 'JSON')
    .action(async (options) => {
      const { images: list, warnings } = await client().images.listing(options.local ? { origin: 'paddock' } : {});
      for (const warning of warnings) console.error(`warning: ${warning}`);
      if (options.json) return print(list);
      if (list.length === 0) return print('no images');
      print(
        table([
          ['IMAGE', 'ORIGIN', 'FORMAT', 'ARCH', 'SIZE', 'OWNER', 'EXPIRES'],
          ...list.map((image) =>
            image.origin === 'paddock'
              ? [image.ref, 'paddock', image.format, image.arch, mib(image.size), image.owner, image.expiresAt ?? '-']
              : [
                  image.ref,
                  `${image.origin}${image.paddockRef ? ` (from ${image.paddockRef})` : ''}`,
                  image.format ?? '-',
                  '-',
                  image.size === undefined ? '-' : mib(image.size),
                  '-',
                  '-',
                ],
          ),
        ]),
      );
    });

  images
    .command('show')
    .description('one image: format, architecture, size, sha256, owner, expiry, how its key reaches a machine')
    .argument('<image>', 'name or name:tag')
    .option('--json', 'JSON')
    .action(async (ref: string, options) => {
      const image = await client().images.show(ref);
      print(options.json ? image : describe(image));
    });

  images
    .command('rm')
    .argument('<image>', 'name or name:tag')
    .description('delete an image (refused while a live reservation uses it)')
    .action(async (ref: string) => {
      await client().images.remove(ref);
      print(`${ref}: deleted`);
    });

  images
    .command('download')
    .description('download an image to a file (--range: only some bytes)')
    .argument('<image>', 'name or name:tag')
    .argument('<file>', 'where to write it')
    .option('--range <start-end>', 'only these bytes (inclusive), e.g. 0-1023')
    .option('--quiet', 'no progress')
    .action(async (ref: string, file: string, options) => {
      const bar = options.quiet ? undefined : progressBar(`downloading ${ref}`);
      let received = 0;
      await client().images.download(ref, file, {
        ...(options.range ? { range: options.range } : {}),
        onProgress: (done, total) => {
          received = done;
          bar?.update(done, total);
        },
      });
      bar?.finish(received);
    });
}
