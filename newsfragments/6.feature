Session persistence: StickySource stick table and Cookie (insert, rewrite, prefix; indirect, nocache, preserve, maxidle, maxlife).
