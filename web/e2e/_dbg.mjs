import { chromium } from 'playwright-core';
const B='http://127.0.0.1:18080';
const b = await chromium.launch({executablePath:'/usr/bin/chromium',args:['--no-sandbox']});
const c = await b.newContext({baseURL:B, viewport:{width:390,height:844}, isMobile:true, hasTouch:true, deviceScaleFactor:1});
const p = await c.newPage();
await p.goto('/signin');
await p.getByLabel('Email',{exact:true}).fill('admin@dev.example');
await p.getByLabel('Password',{exact:true}).fill('Sup3r-secret-pass');
await p.getByRole('button',{name:'Sign in',exact:true}).click();
await p.getByRole('heading',{level:1,name:/Welcome/}).waitFor();
for (const r of process.argv.slice(2)) {
await p.goto(r); await p.locator('h1').first().waitFor(); await p.waitForTimeout(800);
const wide = await p.evaluate(() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 392 && !e.closest('.table-wrap')).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 12));
console.log(r, wide);
await p.screenshot({path:'/tmp/webdev/dbg'+r.replace(/\//g,'_')+'.png'});
}
await b.close();
