// Images: Paddock's own (size, owner, expiry, boot failures) and those the provider pools list.
import type { ImageListEntry } from '../../protocol/api.js';
import { api, bytes, relative } from '../api.js';
import { Columns, Loading, usePoll } from '../ui.js';

export function Images() {
  const images = usePoll(() => api.get<ImageListEntry[]>('/v1/images'), 10_000);
  if (!images.data) return <Loading error={images.error} />;
  return (
    <section>
      <h2>Images</h2>
      {images.data.length === 0 && <p class="muted">No images yet: paddock images upload FILE --name NAME.</p>}
      <table>
        <Columns names={['Image', 'Format', 'Arch', 'Size', 'Owner', 'Uploaded', 'Expires', 'Boot failures']} />
        <tbody>
          {images.data.map((image) =>
            image.origin === 'paddock' ? (
              <tr key={image.ref} data-image={image.ref}>
                <td>{image.ref}</td>
                <td>{image.format}</td>
                <td>{image.arch}</td>
                <td>{bytes(image.size)}</td>
                <td>{image.owner}</td>
                <td>{relative(image.createdAt)}</td>
                <td>{image.expiresAt ? relative(image.expiresAt) : 'never'}</td>
                <td class={image.bootFailures > 0 ? 'warn' : ''}>{image.bootFailures}</td>
              </tr>
            ) : (
              <tr key={image.ref} data-image={image.ref}>
                <td>{image.ref}</td>
                <td>{image.format ?? '—'}</td>
                <td class="muted">{image.origin}</td>
                <td>{image.size === undefined ? '—' : bytes(image.size)}</td>
                <td class="muted">{image.pool}</td>
                <td>{relative(image.createdAt)}</td>
                <td class="muted">{image.status}</td>
                <td />
              </tr>
            ),
          )}
        </tbody>
      </table>
    </section>
  );
}
