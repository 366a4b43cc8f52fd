// fetch refuses a URL with user:password in it: such a URL's credentials go as a Basic authorization header, and
// what is shown (pages, logs, errors) is the URL without them.

/** `url` without user:password, as a fetch target, and the header carrying them (none when there are none). */
export function withBasicAuth(url: string): { target: URL; headers: Record<string, string> } {
  const target = new URL(url);
  const headers: Record<string, string> = {};
  if (target.username || target.password) {
    const user = `${decodeURIComponent(target.username)}:${decodeURIComponent(target.password)}`;
    headers.authorization = `Basic ${Buffer.from(user).toString('base64')}`;
    target.username = '';
    target.password = '';
  }
  return { target, headers };
}

/** `url` without user:password (what may be shown). */
export function publicUrl(url: string): string {
  try {
    return withBasicAuth(url).target.toString();
  } catch {
    return '(not a URL)';
  }
}
