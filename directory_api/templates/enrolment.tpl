% if erased_notice:
<div class="notice done" role="status"><p>{{erased_notice}}</p></div>
% end
% if enrolment.erased is not None:
<div class="notice" role="status"><p>The personal data of this enrolment was erased on {{enrolment.erased.strftime('%Y-%m-%d %H:%M')}} UTC: its payload keeps only what names no one.</p></div>
% end
<div class="cards">
<div class="card">
<h2>Enrolment</h2>
<dl>
<dt>enrolment id</dt><dd>{{enrolment.id}}</dd>
<dt>created (UTC)</dt><dd>{{enrolment.created.strftime('%Y-%m-%d %H:%M:%S')}}</dd>
<dt>message id</dt><dd><code>{{shown(enrolment.sqs_message_id)}}</code></dd>
% if retries:
<dt>client's retries</dt><dd>
% for message_id in retries:
<code>{{message_id}}</code><br>
% end
</dd>
% end
</dl>
</div>
<div class="card">
<h2>Company</h2>
% if company is None:
<p class="empty">No company row for this enrolment.</p>
% else:
<dl>
<dt>number</dt><dd>{{shown(company.number)}}</dd>
<dt>name</dt><dd>{{shown(company.name)}}</dd>
<dt>export status</dt><dd>{{shown(company.export_status)}}</dd>
<dt>date of creation</dt><dd>{{shown(company.date_of_creation)}}</dd>
<dt>revenue</dt><dd>{{shown(None if company.revenue is None else f'{company.revenue:.2f}')}}</dd>
</dl>
% end
</div>
<div class="card">
<h2>Supplier</h2>
% if supplier is None:
<p class="empty">No supplier row for this enrolment.</p>
% else:
<dl>
<dt>sso id</dt><dd>{{shown(supplier.sso_id)}}</dd>
<dt>e-mail</dt><dd>{{!email_shown(supplier.company_email)}}</dd>
<dt>mobile number</dt><dd>{{shown(supplier.mobile_number)}}</dd>
<dt>referrer</dt><dd>{{shown(supplier.referrer)}}</dd>
</dl>
% end
</div>
<div class="card">
<h2>Confirmation e-mail</h2>
<p>{{email}}</p>
</div>
</div>
<h2>Payload, as received</h2>
<pre class="payload">{{payload}}</pre>
{{!history_html}}
% if enrolment.erased is None:
<h2>Right to erasure</h2>
<p><a class="danger" href="{{base}}enrolments/{{enrolment.id}}/erase">Erase this supplier's personal data…</a> <span class="hint">(a confirmation page says what will go)</span></p>
% end
